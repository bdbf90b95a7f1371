import Foundation
import Logging
import MeshIdentity
import MeshTLS
import MeshTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What one side of a test connection saw.
final class Observations: Sendable {
    private let state = NIOLockedValueBox<
        (
            peers: [SpiffeID], handshakeErrors: [TLSHandshakeError], otherErrors: [String], received: ByteBuffer,
            inputClosed: Bool
        )
    >(([], [], [], ByteBuffer(), false))

    var peers: [SpiffeID] { state.withLockedValue { $0.peers } }
    var handshakeErrors: [TLSHandshakeError] { state.withLockedValue { $0.handshakeErrors } }
    var otherErrors: [String] { state.withLockedValue { $0.otherErrors } }
    var received: String { state.withLockedValue { String(buffer: $0.received) } }
    var inputClosed: Bool { state.withLockedValue { $0.inputClosed } }

    func peer(_ id: SpiffeID) { state.withLockedValue { $0.peers.append(id) } }
    func error(_ error: any Error) {
        state.withLockedValue {
            if let error = error as? TLSHandshakeError {
                $0.handshakeErrors.append(error)
            } else {
                $0.otherErrors.append("\(error)")
            }
        }
    }
    func receive(_ buffer: ByteBuffer) {
        state.withLockedValue {
            var b = buffer; $0.received.writeBuffer(&b)
        }
    }
    func closeInput() { state.withLockedValue { $0.inputClosed = true } }

    /// Polls until `condition` holds or `seconds` pass.
    func wait(seconds: Double = 5, until condition: (Observations) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < deadline {
            if condition(self) { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return condition(self)
    }
}

/// The "application" behind a MeshTLSHandler in tests: records everything, optionally
/// sends a greeting once the peer is authenticated, and answers a half-close.
final class ObservingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let observations: Observations
    let greeting: String?
    let replyOnInputClosed: String?

    init(_ observations: Observations, greeting: String? = nil, replyOnInputClosed: String? = nil) {
        self.observations = observations
        self.greeting = greeting
        self.replyOnInputClosed = replyOnInputClosed
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let completed = event as? TLSHandshakeCompleted {
            observations.peer(completed.peer)
            if let greeting {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: greeting)), promise: nil)
            }
            context.read()
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            observations.closeInput()
            if let reply = replyOnInputClosed {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: reply)), promise: nil)
                context.close(mode: .output, promise: nil)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        observations.receive(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.read()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        observations.error(error)
    }
}

/// Fresh trust domains, credentials and loopback servers for TLS tests.
struct TLSHarness {
    static let group = MultiThreadedEventLoopGroup.singleton
    static let logger = Logger(label: "test")

    let domain = try! TrustDomain("example.org")
    let root: CertificateAuthority
    let node: CertificateAuthority

    init() throws {
        root = try CertificateAuthority.createRoot(trustDomain: domain)
        node = try root.issueIntermediate(nodeName: "node-1")
    }

    func id(_ serviceAccount: String) -> SpiffeID {
        try! SpiffeID("spiffe://example.org/ns/default/sa/\(serviceAccount)")
    }

    func credentials(_ serviceAccount: String) throws -> WorkloadCredentials {
        try node.issueWorkload(id(serviceAccount))
    }

    /// A mesh server on 127.0.0.1:0 whose app records into `observations`.
    func server(
        _ credentials: WorkloadCredentials,
        observations: Observations,
        handshakeTimeout: TimeAmount = .seconds(5),
        replyOnInputClosed: String? = nil
    ) async throws -> any Channel {
        let context = try TLSContext(credentials: credentials)
        return try await ServerBootstrap(group: Self.group)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        MeshTLSHandler(
                            context: context,
                            expectedPeer: nil,
                            handshakeTimeout: handshakeTimeout,
                            logger: Self.logger
                        ),
                        ObservingHandler(observations, replyOnInputClosed: replyOnInputClosed)
                    )
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// Connects a mesh client that insists on `expecting` and sends `greeting` once authenticated.
    func client(
        _ credentials: WorkloadCredentials,
        expecting: SpiffeID,
        to server: any Channel,
        observations: Observations,
        greeting: String? = "hello"
    ) async throws -> any Channel {
        let context = try TLSContext(credentials: credentials)
        return try await ClientBootstrap(group: Self.group)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.autoRead, value: false)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        MeshTLSHandler(context: context, expectedPeer: expecting, logger: Self.logger),
                        ObservingHandler(observations, greeting: greeting)
                    )
                }
            }
            .connect(to: server.localAddress!).get()
    }
}
