import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Loopback "applications" behind the server sidecar.
enum TestApp {
    /// Bytes `ReadAllThenReply` adds after its count: far more than the socket buffers
    /// and the relay's water marks hold, so the reply is still queued when the app closes.
    static let replyPadding = 8 << 20

    /// Echoes everything; when the peer half-closes, finishes writing and half-closes too.
    final class Echo: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.write(data, promise: nil)
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            context.flush()
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, event == .inputClosed {
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.writeAndFlush(NIOAny(ByteBuffer())).whenComplete { _ in
                    bound.value.close(mode: .output, promise: nil)
                }
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    /// A minimal HTTP/1.1 server for requests without bodies: answers every request head
    /// with `200` and a body naming the method and path it saw (none for HEAD), or
    /// `404` when the path contains `/missing`.
    final class HTTPResponder: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var pending = ""

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            pending += String(buffer: unwrapInboundIn(data))
            while let end = pending.range(of: "\r\n\r\n") {
                let head = pending[..<end.lowerBound]
                let requestLine = head.split(separator: "\r\n").first.map(String.init) ?? ""
                pending = String(pending[end.upperBound...])
                let parts = requestLine.split(separator: " ")
                let body = parts.count >= 2 ? "saw \(parts[0]) \(parts[1])\n" : "saw ?\n"
                let status = parts.count >= 2 && parts[1].contains("/missing") ? "404 Not Found" : "200 OK"
                // A HEAD response announces the body it does not carry.
                let response =
                    "HTTP/1.1 \(status)\r\ncontent-length: \(body.utf8.count)\r\n\r\n"
                    + (parts.first == "HEAD" ? "" : body)
                context.write(wrapOutboundOut(ByteBuffer(string: response)), promise: nil)
            }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            context.flush()
        }

        /// The client is done sending: like any HTTP server, close once answered.
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, event == .inputClosed {
                context.close(promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    /// Reads the whole request (until the client half-closes), then answers with its
    /// length and closes: only correct if half-close is carried end to end.
    final class ReadAllThenReply: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var received = 0

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received += unwrapInboundIn(data).readableBytes
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let event = event as? ChannelEvent, event == .inputClosed {
                let reply = "received \(received) bytes\n" + String(repeating: "z", count: TestApp.replyPadding)
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: reply))).whenComplete { _ in
                    bound.value.close(promise: nil)
                }
            }
        }
    }

    /// Starts an app on 127.0.0.1:0; `accepted` counts its connections.
    static func start(
        accepted: NIOLockedValueBox<Int> = NIOLockedValueBox(0),
        _ makeHandler: @escaping @Sendable () -> any ChannelHandler
    ) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 2048)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                accepted.withLockedValue { $0 += 1 }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(makeHandler())
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }
}
