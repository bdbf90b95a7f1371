import Logging
import MeshIdentity
import Metrics
import NIOCore

/// A SwiftNIO handler that runs mutual TLS with OpenSSL over the channel's bytes.
///
/// Inbound it takes ciphertext and passes on plaintext; outbound the reverse. The next
/// handler sees nothing until the peer is authenticated: it first gets a
/// `TLSHandshakeCompleted` user event, then plaintext. Failures are logged with their
/// reason, counted in `beemesh_tls_handshake_failures_total{reason}`, passed on as
/// `TLSHandshakeError`, and the channel is closed.
///
/// Closing follows TLS 1.3: `close(mode: .output)` sends close_notify then a TCP FIN and
/// reading goes on; a close_notify from the peer becomes `ChannelEvent.inputClosed`; a
/// TCP FIN without close_notify is a truncation and closes the channel with an error.
/// The channel must allow remote half-closure for half-close to work.
public final class MeshTLSHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    /// Where the connection stands, each state with what only it needs.
    ///
    /// ```
    /// idle ─active→ handshaking ─verified peer→ open ─close(.output)→ outputClosed
    ///                    │ failure, timeout, early close                │
    ///                    └→ failed                       close(.all) / inactive → closed
    /// ```
    private enum State {
        /// In a pipeline, the channel not active yet: what the next handler writes, or
        /// an output close it asks for, waits for the handshake.
        case idle(Waiting)
        case handshaking(Waiting, timeout: Scheduled<Void>)
        /// Authenticated: plaintext flows both ways.
        case open(receivedCloseNotify: Bool)
        /// We sent close_notify; we may still read.
        case outputClosed(receivedCloseNotify: Bool)
        case failed
        /// Closed, or detached to a `TLSSocketStream`: inert.
        case closed

        var name: String {
            switch self {
            case .idle: "idle"
            case .handshaking: "handshaking"
            case .open: "open"
            case .outputClosed: "outputClosed"
            case .failed: "failed"
            case .closed: "closed"
            }
        }

        var isAuthenticated: Bool {
            switch self {
            case .open, .outputClosed: true
            case .idle, .handshaking, .failed, .closed: false
            }
        }
    }

    /// What was asked of the handler before the handshake finished.
    private struct Waiting {
        /// Plaintext written before the handshake finished, sent right after it.
        var writes: [(ByteBuffer, EventLoopPromise<Void>?)] = []
        var outputClose: EventLoopPromise<Void>?
    }

    private let tlsContext: TLSContext
    private let role: TLSConnection.Role
    private let connection: TLSConnection
    /// The channel's allocator, kept so that decrypting a record does not go through
    /// the channel for it.
    private var allocator = ByteBufferAllocator()
    private let handshakeTimeout: TimeAmount
    private var logger: Logger
    private var state: State = .idle(Waiting())
    /// Its connection was closed by its own side on purpose before the handshake ended
    /// (`TLSHandshakeAbandoned`): that is not logged or counted as a rejection.
    private var abandoned = false
    /// Promises of plaintext already encrypted but not flushed yet.
    private var unflushedPromise: EventLoopPromise<Void>?
    /// Ciphertext was passed down without a flush (large writes go down in chunks).
    private var writtenSinceFlush = false

    /// - Parameters:
    ///   - context: credentials and settings; the handler keeps this one for its lifetime.
    ///   - expectedPeer: for a client, the identity the server must have; nil on a server.
    public convenience init(
        context: TLSContext,
        expectedPeer: SpiffeID?,
        handshakeTimeout: TimeAmount = .seconds(10),
        logger: Logger
    ) {
        self.init(
            context: context,
            role: expectedPeer.map { .client(expectedPeer: $0) } ?? .server,
            handshakeTimeout: handshakeTimeout,
            logger: logger
        )
    }

    /// A client that accepts any identity of the trust domain: for peers known by
    /// something other than their SPIFFE ID (a DHT node by the SHA-256 of its key,
    /// which `TLSHandshakeCompleted.peerPublicKey` lets the caller check).
    public static func client(
        anyPeerOf context: TLSContext,
        handshakeTimeout: TimeAmount = .seconds(10),
        logger: Logger
    ) -> MeshTLSHandler {
        MeshTLSHandler(
            context: context,
            role: .client(expectedPeer: nil),
            handshakeTimeout: handshakeTimeout,
            logger: logger
        )
    }

    private init(context: TLSContext, role: TLSConnection.Role, handshakeTimeout: TimeAmount, logger: Logger) {
        self.tlsContext = context
        self.role = role
        self.handshakeTimeout = handshakeTimeout
        self.logger = logger
        self.connection = TLSConnection(context: context, role: role, allocator: ByteBufferAllocator())
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        allocator = context.channel.allocator
        if context.channel.isActive { startHandshake(context: context) }
    }

    /// An event that cannot happen in the state the handler is in: a bug in the handler
    /// or in what drives it, stopped here with the state named.
    private func illegal(_ event: String) -> Never {
        fatalError("MeshTLSHandler: \(event) in state \(state.name)")
    }

    public func channelActive(context: ChannelHandlerContext) {
        startHandshake(context: context)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        let waiting = leaveHandshake()
        state = .closed
        if let waiting {
            let error = TLSHandshakeError(.closed, "connection closed during the handshake")
            recordFailure(error, context: context)
            fail(waiting, ChannelError.ioOnClosedChannel)
            // Tell the handlers behind us why, so a client can try another endpoint.
            context.fireErrorCaught(error)
        }
        context.fireChannelInactive()
    }

    private func startHandshake(context: ChannelHandlerContext) {
        guard case .idle(let waiting) = state else { return }  // handlerAdded and channelActive both start it
        logger[metadataKey: "peer_address"] = "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")"
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        let timeout = context.eventLoop.scheduleTask(in: handshakeTimeout) {
            let (handler, context) = bound.value
            guard case .handshaking = handler.state else { return }
            handler.fail(
                TLSHandshakeError(.timeout, "no handshake within \(handler.handshakeTimeout)"),
                context: context
            )
        }
        state = .handshaking(waiting, timeout: timeout)
        advanceHandshake(context: context)
        context.read()
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let ciphertext = unwrapInboundIn(data)
        switch state {
        case .handshaking:
            connection.receive(ciphertext)
            advanceHandshake(context: context)
            if state.isAuthenticated { deliverPlaintext(context: context, hint: 0) }
        case .open, .outputClosed:
            connection.receive(ciphertext)
            deliverPlaintext(context: context, hint: ciphertext.readableBytes)
        case .failed, .closed:
            break  // what was in flight when the connection failed or closed
        case .idle:
            illegal("a read before the channel was active")
        }
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        flushOutput(context: context)
        if case .handshaking = state {
            context.read()
        }
        context.fireChannelReadComplete()
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is TLSHandshakeAbandoned {
            abandoned = true
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed {
            switch state {
            case .handshaking, .idle:
                fail(TLSHandshakeError(.closed, "peer closed during the handshake"), context: context)
            case .open(let receivedCloseNotify), .outputClosed(let receivedCloseNotify):
                if !receivedCloseNotify {
                    logger.debug("TCP FIN without close_notify: closing as truncated")
                    context.fireErrorCaught(TLSStreamError(.truncated, "peer closed TCP without close_notify"))
                    context.close(promise: nil)
                }
            case .failed, .closed:
                break
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func advanceHandshake(context: ChannelHandlerContext) {
        guard case .handshaking(let waiting, let timeout) = state else { illegal("a handshake step") }
        switch connection.handshake() {
        case .inProgress:
            flushOutput(context: context)
        case .complete:
            guard let peer = connection.peer, let certificate = connection.peerCertificate else {
                fail(TLSHandshakeError(.protocolError, "handshake finished without a verified peer"), context: context)
                return
            }
            timeout.cancel()
            state = .open(receivedCloseNotify: false)
            flushOutput(context: context)
            logger.debug(
                "mTLS established",
                metadata: [
                    "peer": "\(peer)", "tls_version": "\(connection.protocolVersion)", "cipher": "\(connection.cipher)",
                ]
            )
            context.fireUserInboundEventTriggered(
                TLSHandshakeCompleted(
                    peer: peer,
                    protocolVersion: connection.protocolVersion,
                    cipher: connection.cipher,
                    peerCertificate: certificate
                )
            )
            for (buffer, promise) in waiting.writes { encrypt(buffer, promise: promise, context: context) }
            if !waiting.writes.isEmpty { flushOutput(context: context) }
            if let promise = waiting.outputClose { closeOutput(context: context, promise: promise) }
        case .failed(let error):
            fail(error, context: context)
        }
    }

    private func deliverPlaintext(context: ChannelHandlerContext, hint: Int) {
        var plaintext = allocator.buffer(capacity: max(hint, 1024))
        let result = connection.read(into: &plaintext)
        if plaintext.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(plaintext))
        }
        switch result {
        case .wouldBlock:
            break
        case .closeNotify:
            switch state {
            case .open(receivedCloseNotify: false): state = .open(receivedCloseNotify: true)
            case .outputClosed(receivedCloseNotify: false): state = .outputClosed(receivedCloseNotify: true)
            case .open, .outputClosed, .failed, .closed: return  // told once; or closed meanwhile
            case .idle, .handshaking: illegal("close_notify before the handshake finished")
            }
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        case .failed(let reason):
            logger.warning("TLS stream error", metadata: ["reason": "\(reason)"])
            context.fireErrorCaught(TLSStreamError(.protocolError, reason))
            flushOutput(context: context)
            context.close(promise: nil)
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        switch state {
        case .idle(var waiting):
            waiting.writes.append((buffer, promise))
            state = .idle(waiting)
        case .handshaking(var waiting, let timeout):
            waiting.writes.append((buffer, promise))
            state = .handshaking(waiting, timeout: timeout)
        case .open:
            encrypt(buffer, promise: promise, context: context)
        case .outputClosed, .failed, .closed:
            promise?.fail(ChannelError.outputClosed)
        }
    }

    public func flush(context: ChannelHandlerContext) {
        flushOutput(context: context)
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch mode {
        case .output:
            switch state {
            case .idle(var waiting):
                waiting.outputClose = promise ?? context.eventLoop.makePromise()
                state = .idle(waiting)
            case .handshaking(var waiting, let timeout):
                waiting.outputClose = promise ?? context.eventLoop.makePromise()
                state = .handshaking(waiting, timeout: timeout)
            case .open, .outputClosed, .failed, .closed:
                closeOutput(context: context, promise: promise)
            }
        case .all:
            switch state {
            case .open:
                connection.shutdown()
                state = .closed
                flushOutput(context: context)
            case .outputClosed:
                state = .closed
                flushOutput(context: context)
            case .handshaking(_, let timeout):
                timeout.cancel()
            case .idle, .failed, .closed:
                break
            }
            context.close(mode: .all, promise: promise)
        case .input:
            context.close(mode: mode, promise: promise)
        }
    }

    /// Whether `detach` would succeed now.
    public var isDetachable: Bool {
        guard case .open(receivedCloseNotify: false) = state else { return false }
        return unflushedPromise == nil && !writtenSinceFlush && connection.isQuiescent
    }

    /// Takes the established connection out of the channel, to run on `socket` (a
    /// duplicate of the channel's own descriptor) without the pipeline. Returns nil,
    /// changing nothing, unless the handshake is done, nothing waits to be written,
    /// every byte received was decrypted and passed on, and neither side has closed.
    /// After this the handler is inert: it is removed from the pipeline, and closing
    /// the channel sends no close_notify.
    public func detach(socket: CInt, context: ChannelHandlerContext) -> TLSSocketStream? {
        guard isDetachable else { return nil }
        state = .closed
        let stream = TLSSocketStream(connection: connection, fd: socket)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        return stream
    }

    private func closeOutput(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        guard case .open(let receivedCloseNotify) = state else {
            promise?.succeed(())  // closed already, or never to be opened
            return
        }
        connection.shutdown()
        state = .outputClosed(receivedCloseNotify: receivedCloseNotify)
        // Shut the socket only once close_notify, and so everything before it, is
        // written: if our input has ended too, NIO turns an output close into a full
        // close, which would drop writes still queued.
        let written = context.eventLoop.makePromise(of: Void.self)
        if let pending = unflushedPromise {
            written.futureResult.cascade(to: pending)
            unflushedPromise = nil
        }
        writtenSinceFlush = false
        let closeNotify = connection.takeOutput() ?? context.channel.allocator.buffer(capacity: 0)
        context.writeAndFlush(wrapOutboundOut(closeNotify), promise: written)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        written.futureResult.whenComplete { _ in
            bound.value.close(mode: .output, promise: promise)
        }
    }

    private func encrypt(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        if let failure = connection.write(buffer) {
            promise?.fail(TLSStreamError(.protocolError, failure))
            context.fireErrorCaught(TLSStreamError(.protocolError, failure))
            context.close(promise: nil)
            return
        }
        if let promise {
            if let unflushedPromise {
                unflushedPromise.futureResult.cascade(to: promise)
            } else {
                unflushedPromise = promise
            }
        }
        // Hand large ciphertext down without waiting for the flush, so no buffer grows
        // past one read's worth.
        if connection.pendingOutput >= Self.outputChunk, let output = connection.takeOutput() {
            let promise = unflushedPromise
            unflushedPromise = nil
            writtenSinceFlush = true
            context.write(wrapOutboundOut(output), promise: promise)
        }
    }

    private static let outputChunk = 64 * 1024

    private func flushOutput(context: ChannelHandlerContext) {
        if let output = connection.takeOutput() {
            let promise = unflushedPromise
            unflushedPromise = nil
            writtenSinceFlush = false
            context.writeAndFlush(wrapOutboundOut(output), promise: promise)
            return
        }
        if writtenSinceFlush {
            writtenSinceFlush = false
            context.flush()
        }
        if let promise = unflushedPromise {
            // Only zero-byte writes are left: nothing to wait for.
            unflushedPromise = nil
            promise.succeed(())
        }
    }

    private func fail(_ error: TLSHandshakeError, context: ChannelHandlerContext) {
        // Failed or finished already: the first reason stands.
        guard let waiting = leaveHandshake() else { return }
        state = .failed
        recordFailure(error, context: context)
        fail(waiting, error)
        flushOutput(context: context)  // the alert, if OpenSSL produced one
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    private func recordFailure(_ error: TLSHandshakeError, context: ChannelHandlerContext) {
        guard !abandoned else { return }  // we closed it ourselves: nothing was rejected
        let role = connection.peerRoleLabel
        logger.warning(
            "mTLS handshake rejected",
            metadata: ["reason": "\(error.reason.label)", "detail": "\(error.detail)", "side": "\(role)"]
        )
        Counter(
            label: "beemesh_tls_handshake_failures_total",
            dimensions: [("reason", error.reason.label), ("side", role)]
        ).increment()
    }

    /// Before authentication: what was asked meanwhile, the handshake timer cancelled;
    /// nil once the handshake finished or failed.
    private func leaveHandshake() -> Waiting? {
        switch state {
        case .idle(let waiting):
            return waiting
        case .handshaking(let waiting, let timeout):
            timeout.cancel()
            return waiting
        case .open, .outputClosed, .failed, .closed:
            return nil
        }
    }

    /// What waited for a handshake that will not finish.
    private func fail(_ waiting: Waiting, _ error: any Error) {
        for (_, promise) in waiting.writes { promise?.fail(error) }
        waiting.outputClose?.fail(error)
    }
}

extension TLSConnection {
    var peerRoleLabel: String {
        switch role {
        case .server: "server"
        case .client: "client"
        }
    }
}

@available(*, unavailable)
extension MeshTLSHandler: Sendable {}

/// Fired into a client connection's pipeline just before its own side closes it in
/// the middle of the handshake on purpose (a client sidecar racing endpoints closes the
/// attempts that lost): `MeshTLSHandler` then records no failure. The peer still sees
/// a client that left mid-handshake.
public struct TLSHandshakeAbandoned: Sendable {
    public init() {}
}
