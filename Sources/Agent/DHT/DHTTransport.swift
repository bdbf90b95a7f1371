import Kademlia
import Logging
import MeshConfiguration
import MeshTLS
import Metrics
import NIOCore
import NIOPosix

/// The DHT's connections: mutual TLS between node identities, length-prefixed frames
/// (`WireCodec`), one connection per peer reused for every message both ways.
///
/// A peer is known by its node ID, the SHA-256 of its public key: a connection to a
/// contact is used only if the key the peer proved in the handshake hashes to the ID the
/// contact claims, and every message on a connection must come from that ID. Peers that
/// are not node identities (`spiffe://<td>/node/<name>`) are refused.
///
/// All state lives on one event loop; the methods must be called on it.
final class DHTTransport: @unchecked Sendable {
    let loop: any EventLoop
    private let tls: TLSContext
    let logger: Logger
    private let requestTimeout: TimeAmount
    private var onEnvelope: (Envelope) -> Void = { _ in }
    private var byPeer: [NodeID: any Channel] = [:]
    private var dialing: [String: EventLoopFuture<(any Channel, NodeID)>] = [:]
    private var open = 0
    private var server: (any Channel)?

    /// Connections beyond this many (both directions) are refused.
    static let maximumConnections = 1024

    private let metrics: AgentMetrics

    init(loop: any EventLoop, tls: TLSContext, requestTimeout: TimeAmount, metrics: AgentMetrics, logger: Logger) {
        self.metrics = metrics
        self.loop = loop
        self.tls = tls
        self.requestTimeout = requestTimeout
        self.logger = logger
    }

    /// Binds the DHT listener; `onEnvelope` gets every authenticated message (on the loop).
    func listen(on address: HostPort, onEnvelope: @escaping (Envelope) -> Void) -> EventLoopFuture<any Channel> {
        loop.preconditionInEventLoop()
        self.onEnvelope = onEnvelope
        let transport = NIOLoopBound(self, eventLoop: loop)
        return ServerBootstrap(group: loop)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let transport = transport.value
                    try channel.pipeline.syncOperations.addHandlers(
                        MeshTLSHandler(
                            context: transport.tls,
                            expectedPeer: nil,
                            handshakeTimeout: transport.requestTimeout * 5,
                            logger: transport.logger
                        ),
                        DHTConnectionHandler(expected: nil, transport: transport, identified: nil)
                    )
                }
            }
            .bind(host: address.host, port: address.port)
            .map { channel in
                transport.value.server = channel
                return channel
            }
    }

    /// Sends `envelope` to `contact` over the connection to it, dialling one if needed.
    /// A message that cannot be delivered is dropped: the state machine's timeout
    /// notices the missing answer.
    func send(_ envelope: Envelope, to contact: Contact) {
        loop.preconditionInEventLoop()
        metrics.dhtSent()
        if let channel = byPeer[contact.id] {
            channel.writeAndFlush(envelope, promise: nil)
            return
        }
        connect(contact.address, expecting: contact.id).whenSuccess { channel, _ in
            channel.writeAndFlush(envelope, promise: nil)
        }
    }

    /// Connects to a node known only by address (a bootstrap peer): its ID comes from the
    /// key it proves in the handshake.
    func identify(_ address: String) -> EventLoopFuture<NodeID> {
        connect(address, expecting: nil).map { $0.1 }
    }

    func close() -> EventLoopFuture<Void> {
        let channels = Array(byPeer.values) + (server.map { [$0] } ?? [])
        byPeer = [:]
        return EventLoopFuture.andAllComplete(channels.map { $0.close() }, on: loop)
    }

    // MARK: connections

    private func connect(_ address: String, expecting expected: NodeID?) -> EventLoopFuture<(any Channel, NodeID)> {
        if let pending = dialing[address] { return pending }
        guard let target = HostPort(address) else {
            return loop.makeFailedFuture(DHTTransportError("'\(address)' is not host:port"))
        }
        guard open < Self.maximumConnections else {
            return loop.makeFailedFuture(DHTTransportError("connection limit reached"))
        }
        let identified = loop.makePromise(of: NodeID.self)
        let transport = NIOLoopBound(self, eventLoop: loop)
        let dial = ClientBootstrap(group: loop)
            .connectTimeout(requestTimeout)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let transport = transport.value
                    try channel.pipeline.syncOperations.addHandlers(
                        MeshTLSHandler.client(
                            anyPeerOf: transport.tls,
                            handshakeTimeout: transport.requestTimeout,
                            logger: transport.logger
                        ),
                        DHTConnectionHandler(expected: expected, transport: transport, identified: identified)
                    )
                }
            }
            .connect(host: target.host, port: target.port)
            .flatMapError { error in
                identified.fail(error)  // no channel, no handler to do it (a second completion is ignored)
                return transport.value.loop.makeFailedFuture(error)
            }
            .flatMap { channel in identified.futureResult.map { (channel, $0) } }
        dial.whenFailure { error in
            transport.value.logger.debug("DHT peer unreachable", metadata: ["peer": "\(address)", "error": "\(error)"])
        }
        dialing[address] = dial
        dial.whenComplete { _ in transport.value.dialing[address] = nil }
        return dial
    }

    // MARK: from the connections

    fileprivate func opened() -> Bool {
        guard open < Self.maximumConnections else {
            rejected("connection_limit")
            return false
        }
        open += 1
        return true
    }

    fileprivate func authenticated(_ channel: any Channel, peer: NodeID) {
        // The newest connection to a peer carries what is sent next; an older one
        // finishes what it has and closes when the peer closes it.
        byPeer[peer] = channel
    }

    fileprivate func closed(_ channel: any Channel, peer: NodeID?) {
        open -= 1
        if let peer, let current = byPeer[peer], current === channel { byPeer[peer] = nil }
    }

    fileprivate func received(_ envelope: Envelope) {
        metrics.dhtReceived()
        onEnvelope(envelope)
    }

    fileprivate func rejected(_ reason: String) {
        metrics.dhtRejected(reason)
    }
}

struct DHTTransportError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One DHT connection after mutual TLS: checks that the peer is a node and is the node
/// it should be, then turns frames into envelopes and envelopes into frames. A malformed
/// frame or a message claiming another sender is counted; a malformed frame ends the
/// connection (the stream cannot be resynchronised).
private final class DHTConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = Envelope
    typealias OutboundOut = ByteBuffer

    private let expected: NodeID?
    private let transport: DHTTransport
    /// Completed once: with the peer's ID, or the reason there is none.
    private var identified: EventLoopPromise<NodeID>?
    private var decoder = WireDecoder()
    private var peer: NodeID?
    private var counted = false

    init(expected: NodeID?, transport: DHTTransport, identified: EventLoopPromise<NodeID>?) {
        self.expected = expected
        self.transport = transport
        self.identified = identified
    }

    func channelActive(context: ChannelHandlerContext) {
        guard transport.opened() else {
            identify(.failure(DHTTransportError("connection limit reached")))
            context.close(promise: nil)
            return
        }
        counted = true
        context.fireChannelActive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let handshake = event as? TLSHandshakeCompleted else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        guard NodeID.isNodeIdentity(handshake.peer) else {
            refuse("not_a_node", "\(handshake.peer) is not a node identity", context: context)
            return
        }
        let id = NodeID(publicKey: handshake.peerPublicKey)
        if let expected, expected != id {
            refuse("wrong_node_id", "\(handshake.peer) has node ID \(id), expected \(expected)", context: context)
            return
        }
        peer = id
        transport.authenticated(context.channel, peer: id)
        identify(.success(id))
    }

    private func identify(_ result: Result<NodeID, any Error>) {
        identified?.completeWith(result)
        identified = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let peer else { return }  // MeshTLSHandler passes nothing before the handshake
        let bytes = unwrapInboundIn(data)
        do {
            for envelope in try decoder.feed(bytes.readableBytesView) {
                guard envelope.from.id == peer else {
                    transport.rejected("sender_mismatch")
                    continue
                }
                transport.received(envelope)
            }
        } catch {
            refuse("malformed_\(error.code.rawValue)", "\(error)", context: context)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let frame = WireCodec.encode(unwrapOutboundIn(data))
        var buffer = context.channel.allocator.buffer(capacity: frame.count)
        buffer.writeBytes(frame)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if counted { transport.closed(context.channel, peer: peer) }
        identify(.failure(DHTTransportError("connection closed before the peer was identified")))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        identify(.failure(error))
        context.close(promise: nil)
    }

    private func refuse(_ reason: String, _ detail: String, context: ChannelHandlerContext) {
        transport.rejected(reason)
        transport.logger.warning("DHT connection refused", metadata: ["reason": "\(reason)", "detail": "\(detail)"])
        identify(.failure(DHTTransportError(detail)))
        context.close(promise: nil)
    }
}
