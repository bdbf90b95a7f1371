import Logging
import MeshConfiguration
import MeshIdentity
import MeshTLS
import Metrics
import NIOCore
import NIOPosix
import Raft

#if canImport(Glibc)
    import Glibc
#endif

/// The messages of every Raft group an agent hosts, between agents: mutual TLS between
/// node identities (`spiffe://<td>/node/<name>`), one connection per peer reused for
/// every group, frames as below (integers little-endian).
///
/// ```
/// | length u32 (of what follows) | kind u8 = 1 | group length u16 | group (UTF-8) | RaftMessage |
/// | length u32 (of what follows) | kind u8 = 2...7 | group length u16 | group (UTF-8) | RaftControl |
/// ```
///
/// A member's ID is its node's: the first 8 bytes of the SHA-256 of the node's public
/// key (`RaftTransport.memberID`). A connection dialled to a member must prove that
/// key; every message on a connection must come from the member the peer proved it
/// is, and go to this node; a group that is not hosted here, or a sender that is not a
/// member of it, is refused. Refusals are counted by reason
/// (`beemesh_raft_messages_rejected_total`); a malformed frame ends the connection.
///
/// All state lives on one event loop; the methods must be called on it.
public final class RaftTransport: RaftMessageSink, @unchecked Sendable {
    public let loop: any EventLoop
    public let localID: RaftID
    private let tls: TLSContext
    private let logger: Logger
    private var groups: [String: RaftGroupHost] = [:]
    private var addresses: [RaftID: HostPort] = [:]
    private var byPeer: [RaftID: any Channel] = [:]
    private var dialing: [RaftID: EventLoopFuture<any Channel>] = [:]
    private var server: (any Channel)?
    private var open = 0
    private let connectTimeout: TimeAmount
    /// TCP_USER_TIMEOUT of every connection: one whose sent bytes are not acknowledged
    /// this long (its peer's node was cut off or lost power) is closed, and the next
    /// message dials again, instead of waiting out TCP's retransmission back-off
    /// (many seconds) once the peer is back.
    #if os(Linux)
        private let deadPeerOption = ChannelOptions.Types.SocketOption(
            level: .tcp,
            name: NIOBSDSocket.Option(rawValue: CInt(TCP_USER_TIMEOUT))
        )
    #else
        private let deadPeerOption = ChannelOptions.Types.SocketOption(level: .socket, name: .so_keepalive)
    #endif
    static let deadPeerTimeout = 3_000

    /// Connections beyond this many (both directions) are refused.
    static let maximumConnections = 256
    /// The largest frame (a snapshot travels in one: a workload's store holds at most
    /// 16 MiB, with its keys' overhead).
    static let maximumFrame = 24 << 20

    static let rejections = Counter(label: "beemesh_raft_messages_rejected_total")
    let sent = Counter(label: "beemesh_raft_messages_sent_total")
    let received = Counter(label: "beemesh_raft_messages_received_total")

    public init(
        loop: any EventLoop,
        credentials: WorkloadCredentials,
        connectTimeout: TimeAmount = .seconds(2),
        logger: Logger
    ) throws {
        self.loop = loop
        self.tls = try TLSContext(credentials: credentials)
        self.localID = Self.memberID(publicKey: credentials.key.publicKeyDER)
        self.connectTimeout = connectTimeout
        self.logger = logger
    }

    /// A node's member ID in every group it hosts.
    public static func memberID(publicKey der: [UInt8]) -> RaftID {
        Digest.sha256(der).prefix(8).reduce(0) { $0 << 8 | RaftID($1) }
    }

    /// Binds the listener.
    public func listen(on address: HostPort) -> EventLoopFuture<any Channel> {
        loop.preconditionInEventLoop()
        let transport = NIOLoopBound(self, eventLoop: loop)
        return ServerBootstrap(group: loop)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(deadPeerOption, value: Self.deadPeerTimeout)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let transport = transport.value
                    try channel.pipeline.syncOperations.addHandlers(
                        MeshTLSHandler(
                            context: transport.tls,
                            expectedPeer: nil,
                            handshakeTimeout: transport.connectTimeout * 5,
                            logger: transport.logger
                        ),
                        RaftConnectionHandler(expected: nil, transport: transport)
                    )
                }
            }
            .bind(host: address.host, port: address.port)
            .map { channel in
                transport.value.server = channel
                return channel
            }
    }

    public func close() -> EventLoopFuture<Void> {
        loop.preconditionInEventLoop()
        let channels = Array(byPeer.values) + (server.map { [$0] } ?? [])
        byPeer = [:]
        return EventLoopFuture.andAllComplete(channels.map { $0.close() }, on: loop)
    }

    /// Messages for `host.group` go to `host` from now on.
    public func register(_ host: RaftGroupHost) {
        loop.preconditionInEventLoop()
        groups[host.group] = host
    }

    public func unregister(_ group: String) {
        loop.preconditionInEventLoop()
        groups[group] = nil
    }

    /// Where member `id` listens.
    public func setAddress(_ address: HostPort, of id: RaftID) {
        loop.preconditionInEventLoop()
        if addresses[id] != address, let channel = byPeer.removeValue(forKey: id) { channel.close(promise: nil) }
        addresses[id] = address
    }

    // MARK: RaftMessageSink

    /// Sends over the connection to `message.to`, dialling one if needed. A message
    /// that cannot be delivered is dropped: Raft sends again.
    public func send(_ message: RaftMessage, group: String) {
        loop.preconditionInEventLoop()
        sent.increment()
        let frame = Self.frame(message, group: group)
        if let channel = byPeer[message.to] {
            // A peer that does not read gets nothing more queued: Raft sends again.
            if channel.isWritable { channel.writeAndFlush(frame, promise: nil) } else { rejected("peer_not_reading") }
            return
        }
        connect(to: message.to).whenSuccess { channel in channel.writeAndFlush(frame, promise: nil) }
    }

    /// Sends a control frame (`RaftControl`) to member `id`; dropped if it cannot go.
    public func send(_ control: RaftControl, to id: RaftID, group: String) {
        loop.preconditionInEventLoop()
        let frame = Self.frame(kind: control.kind, control.encoded(), group: group)
        if let channel = byPeer[id] {
            if channel.isWritable { channel.writeAndFlush(frame, promise: nil) } else { rejected("peer_not_reading") }
            return
        }
        connect(to: id).whenSuccess { channel in channel.writeAndFlush(frame, promise: nil) }
    }

    static func frame(_ message: RaftMessage, group: String) -> ByteBuffer {
        frame(kind: 1, message.encoded(), group: group)
    }

    static func frame(kind: UInt8, _ bytes: [UInt8], group: String) -> ByteBuffer {
        let name = Array(group.utf8)
        var buffer = ByteBuffer()
        buffer.reserveCapacity(7 + name.count + bytes.count)
        buffer.writeInteger(UInt32(3 + name.count + bytes.count), endianness: .little)
        buffer.writeInteger(kind)
        buffer.writeInteger(UInt16(name.count), endianness: .little)
        buffer.writeBytes(name)
        buffer.writeBytes(bytes)
        return buffer
    }

    // MARK: connections

    private func connect(to id: RaftID) -> EventLoopFuture<any Channel> {
        if let pending = dialing[id] { return pending }
        guard let address = addresses[id] else {
            return loop.makeFailedFuture(RaftTransportError("no address for member \(String(id, radix: 16))"))
        }
        guard open < Self.maximumConnections else {
            return loop.makeFailedFuture(RaftTransportError("connection limit reached"))
        }
        let identified = loop.makePromise(of: Void.self)
        let transport = NIOLoopBound(self, eventLoop: loop)
        let dial = ClientBootstrap(group: loop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(deadPeerOption, value: Self.deadPeerTimeout)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let transport = transport.value
                    let handler = RaftConnectionHandler(expected: id, transport: transport)
                    handler.identified = identified
                    try channel.pipeline.syncOperations.addHandlers(
                        MeshTLSHandler.client(
                            anyPeerOf: transport.tls,
                            handshakeTimeout: transport.connectTimeout,
                            logger: transport.logger
                        ),
                        handler
                    )
                }
            }
            .connect(host: address.host, port: address.port)
            .flatMapError { error in
                identified.fail(error)
                return transport.value.loop.makeFailedFuture(error)
            }
            .flatMap { channel in identified.futureResult.map { channel } }
        dialing[id] = dial
        dial.whenComplete { _ in transport.value.dialing[id] = nil }
        dial.whenFailure { error in
            transport.value.logger.debug(
                "Raft peer unreachable",
                metadata: ["member": "\(String(id, radix: 16))", "address": "\(address)", "error": "\(error)"]
            )
        }
        return dial
    }

    fileprivate func opened() -> Bool {
        guard open < Self.maximumConnections else {
            rejected("connection_limit")
            return false
        }
        open += 1
        return true
    }

    fileprivate func authenticated(_ channel: any Channel, peer: RaftID) {
        byPeer[peer] = channel
    }

    fileprivate func closed(_ channel: any Channel, peer: RaftID?) {
        open -= 1
        if let peer, let current = byPeer[peer], current === channel { byPeer[peer] = nil }
    }

    /// A message whose sender the connection proved: delivered to its group if the
    /// sender is a member of it (or, to a member that is joining, one it asked to join).
    fileprivate func deliver(_ message: RaftMessage, group: String) {
        guard message.to == localID else { return rejected("wrong_recipient") }
        // A term no real group reaches: a member that sent it would make every later
        // term overflow here, at each restart too.
        guard message.term < UInt64.max / 2 else { return rejected("bad_term") }
        guard let host = groups[group] else { return rejected("unknown_group") }
        let membership = host.membership
        // A member that is joining takes messages only from the members it asked.
        guard
            membership.contains(message.from) || (membership.members.isEmpty && host.joinTargets.contains(message.from))
        else {
            return rejected("not_a_member")
        }
        received.increment()
        host.receive(message)
    }

    /// A control frame from node `node` (member `from`, proven by the connection): a
    /// join or leave from any node of the trust domain; anything else only from a
    /// member.
    fileprivate func deliver(_ control: RaftControl, from: RaftID, node: String, group: String) {
        guard let host = groups[group] else { return rejected("unknown_group") }
        switch control {
        case .join, .leave:
            // A node joins from outside, and one that left asks until told it is out.
            break
        default:
            guard host.membership.contains(from) else { return rejected("not_a_member") }
        }
        received.increment()
        host.receive(control, from: from, node: node)
    }

    fileprivate func rejected(_ reason: String) {
        Counter(label: "beemesh_raft_messages_rejected_total", dimensions: [("reason", reason)]).increment()
    }

    fileprivate func log(refused reason: String, _ detail: String) {
        logger.warning("Raft connection refused", metadata: ["reason": "\(reason)", "detail": "\(detail)"])
    }
}

struct RaftTransportError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// One connection after mutual TLS: checks that the peer is a node (and the member it
/// was dialled as), then turns frames into messages for the transport.
private final class RaftConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let expected: RaftID?
    private let transport: RaftTransport
    var identified: EventLoopPromise<Void>?
    private var peer: RaftID?
    /// The peer's node name (`spiffe://<td>/node/<name>`).
    private var node = ""
    private var counted = false
    private var buffer = ByteBuffer()

    init(expected: RaftID?, transport: RaftTransport) {
        self.expected = expected
        self.transport = transport
    }

    func channelActive(context: ChannelHandlerContext) {
        guard transport.opened() else {
            identify(.failure(RaftTransportError("connection limit reached")))
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
        guard handshake.peer.path.hasPrefix("/node/"), handshake.peer.path.count > "/node/".count else {
            return refuse("not_a_node", "\(handshake.peer) is not a node identity", context: context)
        }
        let id = RaftTransport.memberID(publicKey: handshake.peerPublicKey)
        if let expected, expected != id {
            return refuse(
                "wrong_member",
                "\(handshake.peer) is member \(String(id, radix: 16)), not \(String(expected, radix: 16))",
                context: context
            )
        }
        peer = id
        node = String(handshake.peer.path.dropFirst("/node/".count))
        transport.authenticated(context.channel, peer: id)
        identify(.success(()))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let peer else { return }
        var incoming = unwrapInboundIn(data)
        buffer.writeBuffer(&incoming)
        while let length: UInt32 = buffer.getInteger(at: buffer.readerIndex, endianness: .little) {
            guard length >= 3, length <= RaftTransport.maximumFrame else {
                return refuse("malformed_frame", "a frame of \(length) bytes", context: context)
            }
            guard buffer.readableBytes >= 4 + Int(length) else { break }
            buffer.moveReaderIndex(forwardBy: 4)
            var frame = buffer.readSlice(length: Int(length))!
            let kind: UInt8 = frame.readInteger()!
            let nameLength: UInt16 = frame.readInteger(endianness: .little)!
            guard kind == 1 || RaftControl.kinds.contains(kind), let name = frame.readBytes(length: Int(nameLength)),
                let group = String(validating: name, as: UTF8.self)
            else { return refuse("malformed_frame", "frame kind \(kind) or its group name", context: context) }
            if kind != 1 {
                guard let control = RaftControl(kind: kind, body: frame.readBytes(length: frame.readableBytes)![...])
                else { return refuse("malformed_control", "a control frame of kind \(kind)", context: context) }
                transport.deliver(control, from: peer, node: node, group: group)
                continue
            }
            let message: RaftMessage
            do {
                message = try RaftMessage(decoding: frame.readBytes(length: frame.readableBytes)![...])
            } catch {
                return refuse("malformed_\(error.code.rawValue)", "\(error)", context: context)
            }
            guard message.from == peer else {
                transport.rejected("sender_mismatch")
                continue
            }
            transport.deliver(message, group: group)
        }
        buffer.discardReadBytes()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if counted { transport.closed(context.channel, peer: peer) }
        identify(.failure(RaftTransportError("connection closed before the peer was identified")))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        identify(.failure(error))
        context.close(promise: nil)
    }

    private func identify(_ result: Result<Void, any Error>) {
        identified?.completeWith(result)
        identified = nil
    }

    private func refuse(_ reason: String, _ detail: String, context: ChannelHandlerContext) {
        transport.rejected(reason)
        transport.log(refused: reason, detail)
        identify(.failure(RaftTransportError(detail)))
        context.close(promise: nil)
    }
}
