import Logging
import MeshIdentity
import MeshTLS
import MeshTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Proxy
import Testing

/// A client that does not wait for the preface answer: preface, payload and its
/// close_notify all arrive while the server sidecar is still connecting to the app.
/// The app must still see the payload and then the end of input.
@Suite struct EarlyCloseNotifyTests {
    final class EagerClient: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let payload: ByteBuffer
        let received: NIOLockedValueBox<ByteBuffer>
        let ended: EventLoopPromise<Void>

        init(payload: ByteBuffer, received: NIOLockedValueBox<ByteBuffer>, ended: EventLoopPromise<Void>) {
            self.payload = payload
            self.received = received
            self.ended = ended
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is TLSHandshakeCompleted {
                context.writeAndFlush(wrapOutboundOut(payload), promise: nil)
                context.close(mode: .output, promise: nil)
            } else if let event = event as? ChannelEvent, event == .inputClosed {
                ended.succeed(())
            }
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            received.withLockedValue { _ = $0.writeBuffer(&bytes) }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            ended.fail(error)  // no effect once the reply has ended
            context.close(promise: nil)
        }
    }

    @Test func payloadAndEndOfInputReachTheApp() async throws {
        let app = try await TestApp.start { TestApp.ReadAllThenReply() }
        let appPort = app.localAddress!.port!
        let pair = try await MeshPair(routes: [], allowedPorts: [appPort])
        let frontend = pair.directory + "/frontend"
        let context = try TLSContext(
            credentials: try WorkloadCredentials.load(
                certificate: frontend + "/cert.pem",
                key: frontend + "/key.pem",
                bundle: frontend + "/bundle.pem"
            )
        )
        let payload: ByteBuffer = try {
            var buffer = ByteBuffer()
            try PrefaceRequest(service: "orders.default", port: UInt16(appPort)).encode(into: &buffer)
            buffer.writeString("request")
            return buffer
        }()

        let group = MultiThreadedEventLoopGroup.singleton
        let received = NIOLockedValueBox(ByteBuffer())
        let ended = group.next().makePromise(of: Void.self)
        let orders = try SpiffeID("spiffe://example.org/ns/default/sa/orders")
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        MeshTLSHandler(context: context, expectedPeer: orders, logger: Logger(label: "test")),
                        EagerClient(payload: payload, received: received, ended: ended)
                    )
                }
            }
            .connect(to: pair.serverAddresses.inbound).get()
        let timeout = group.next().scheduleTask(in: .seconds(10)) {
            ended.fail(SocketError("no end of the app's reply within 10 s: the app never saw end of input"))
        }
        try await ended.futureResult.get()
        timeout.cancel()
        let text = received.withLockedValue { String(buffer: $0) }
        // The ok answer (BM, version 1, length 3, status 0, reason 0), then the app's reply.
        #expect(text.hasPrefix("BM\u{01}\u{00}\u{03}\u{00}\u{00}\u{00}received 7 bytes\n"))
        #expect(text.utf8.count == 8 + "received 7 bytes\n".utf8.count + TestApp.replyPadding)
        try? await channel.close()
        await pair.shutdown()
        try await app.close()
    }
}
