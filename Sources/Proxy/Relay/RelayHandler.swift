import Logging
import Metrics
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// Moves bytes between two channels, one handler at each end.
///
/// - Backpressure: a side reads (`autoRead` is off) only while its partner is writable,
///   so a slow receiver stops the sender instead of growing a queue. Per connection at
///   most one read (≤ the channel's receive allocation) plus the partner's write-buffer
///   high-water mark are held.
/// - Half-close: when one side's input ends, everything read from it is written and
///   flushed to the partner, then the partner's output is shut down (TCP FIN, or TLS
///   close_notify then FIN) while the other direction goes on. Each channel closes
///   fully once its input has ended and its output has been shut after its last write,
///   so no queued byte is dropped by a close.
/// - Errors and resets close both sides. So does silence: one timer per pair checks
///   every quarter of `idleTimeout` whether bytes moved, and closes the pair once none
///   have for `idleTimeout` (so within 1.25 × `idleTimeout`). One timer per pair, not a
///   clock read on every read and write, keeps the per-message cost off the hot path.
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputEnded = false
    /// Our output was shut after everything for it had been written.
    private var outputEnded = false
    /// This side is being closed because of an error or a timeout, not a clean end.
    private var aborted = false
    /// Set on the first handler of a pair only: it runs the pair's idle timer.
    private let idleTimeout: TimeAmount?
    private var idleCheck: Scheduled<Void>?
    private var bytesAtLastCheck: UInt64 = 0
    private var lastActivity = NIODeadline.now()
    /// Bytes moved out of this side into the partner.
    private(set) var bytesRelayed: UInt64 = 0

    private let logger: Logger
    private let side: String
    /// The flow whose bytes this pair counts; the first side reads from the flow's
    /// source, the second from its destination.
    private let flow: Flow?
    private let readsFromSource: Bool

    private init(idleTimeout: TimeAmount?, side: String, flow: Flow?, logger: Logger) {
        self.idleTimeout = idleTimeout
        self.side = side
        self.flow = flow
        self.readsFromSource = idleTimeout != nil
        self.logger = logger
    }

    /// Two handlers linked to each other; put one in each channel's pipeline. Both
    /// channels must be on the same event loop. The first goes on the downstream
    /// connection (the flow's source).
    static func pair(idleTimeout: TimeAmount, flow: Flow? = nil, logger: Logger) -> (RelayHandler, RelayHandler) {
        let first = RelayHandler(idleTimeout: idleTimeout, side: "first", flow: flow, logger: logger)
        let second = RelayHandler(idleTimeout: nil, side: "second", flow: flow, logger: logger)
        first.partner = second
        second.partner = first
        return (first, second)
    }

    /// Turns a connection that was being set up into a relay with a freshly connected
    /// `upstream`. An opaque relay (no `gate`) moves to the proxy's direct relay loops
    /// when it can; otherwise this installs the pair (and `gate` between the downstream
    /// connection and its relay side), hands on what the set-up already read
    /// (`readFromDownstream` through the gate to upstream, `readFromUpstream` to the
    /// downstream peer) and an end of input seen meanwhile, removes the handler that
    /// owns `context`, and starts reading. Closes both when the pair cannot be
    /// installed. Every handler that builds a relay goes through here.
    static func join(
        _ context: ChannelHandlerContext,
        to upstream: any Channel,
        environment: ProxyEnvironment,
        flow: Flow?,
        logger: Logger,
        gate: (any ChannelHandler)? = nil,
        readFromDownstream: ByteBuffer = ByteBuffer(),
        readFromUpstream: ByteBuffer = ByteBuffer(),
        downstreamInputEnded: Bool = false
    ) {
        if gate == nil, let direct = environment.directRelays,
            direct.adopt(
                downstream: context,
                upstream: upstream,
                environment: environment,
                flow: flow,
                logger: logger,
                early: (readFromDownstream, readFromUpstream, downstreamInputEnded)
            )
        {
            return
        }
        Counter(label: "beemesh_relays_total", dimensions: [("engine", "channel")]).increment()
        let idleTimeout = environment.idleTimeout
        let (downstreamSide, upstreamSide) = pair(idleTimeout: idleTimeout, flow: flow, logger: logger)
        do {
            try upstream.pipeline.syncOperations.addHandler(upstreamSide)
            if let gate { try context.pipeline.syncOperations.addHandler(gate) }
            try context.pipeline.syncOperations.addHandler(downstreamSide)
        } catch {
            logger.error("cannot build relay", metadata: ["error": "\(error)"])
            upstream.close(promise: nil)
            context.close(promise: nil)
            return
        }
        if readFromUpstream.readableBytes > 0 {
            context.channel.writeAndFlush(readFromUpstream, promise: nil)
        }
        if readFromDownstream.readableBytes > 0 {
            // Through the handlers behind this one: the gate decides, the relay forwards.
            context.fireChannelRead(NIOAny(readFromDownstream))
            context.fireChannelReadComplete()
        }
        if downstreamInputEnded {
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        context.channel.read()
        upstream.read()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if idleTimeout != nil { scheduleIdleCheck(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        self.context = nil
        self.partner = nil
    }

    private func scheduleIdleCheck(context: ChannelHandlerContext) {
        guard let idleTimeout else { return }
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleTask(in: .nanoseconds(idleTimeout.nanoseconds / 4)) {
            let (handler, context) = bound.value
            handler.checkIdle(context: context)
        }
    }

    private func checkIdle(context: ChannelHandlerContext) {
        guard let idleTimeout else { return }
        let moved = bytesRelayed &+ (partner?.bytesRelayed ?? 0)
        let now = NIODeadline.now()
        if moved != bytesAtLastCheck {
            bytesAtLastCheck = moved
            lastActivity = now
        } else if now - lastActivity >= idleTimeout {
            flow?.closing(.timeout)
            closeBoth(context: context)
            return
        }
        scheduleIdleCheck(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytesRelayed &+= UInt64(buffer.readableBytes)
        if let flow {
            if readsFromSource {
                flow.received(fromSource: buffer.readableBytes)
            } else {
                flow.received(fromDestination: buffer.readableBytes)
            }
        }
        partner?.partnerWrite(buffer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
        // autoRead is off on relayed channels: ask for the next read here, through the
        // same backpressure gate as any other read request.
        read(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        logger.debug(
            "relay side closed",
            metadata: [
                "side": "\(side)", "bytes_out": "\(bytesRelayed)", "input_ended": "\(inputEnded)",
                "output_ended": "\(outputEnded)",
            ]
        )
        let partner = self.partner
        self.partner = nil
        if inputEnded && outputEnded {
            // A clean end both ways: the partner finishes its own writes and closes itself.
        } else if outputEnded && !aborted {
            // Our output was already shut, so NIO turned the peer's FIN into a full close
            // without an input-closed event: everything it sent has been read. End the
            // partner's output after its writes, as for any half-close.
            partner?.partnerEndOutput()
        } else {
            // Reset, error, idle timeout, drain deadline: abort the other side too.
            partner?.partnerClose()
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, event == .inputClosed else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        inputEnded = true
        guard let partner else {
            context.close(promise: nil)
            return
        }
        partner.partnerEndOutput()
        if outputEnded {
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("relay error", metadata: ["side": "\(side)", "error": "\(error)"])
        flow?.closing(Self.isReset(error) ? .reset : .error)
        closeBoth(context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            partner?.partnerBecameWritable()
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        guard !inputEnded else { return }
        if partner?.partnerIsWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }

    /// A peer that reset its connection (or vanished under a write).
    private static func isReset(_ error: any Error) -> Bool {
        guard let error = error as? IOError else { return false }
        return error.errnoCode == ECONNRESET || error.errnoCode == EPIPE
    }

    private func closeBoth(context: ChannelHandlerContext) {
        aborted = true
        partner?.partnerClose()
        context.close(promise: nil)
    }

    // MARK: calls from the partner

    private func partnerWrite(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(buffer), promise: nil)
    }

    private func partnerFlush() {
        context?.flush()
    }

    private var partnerIsWritable: Bool {
        context?.channel.isWritable ?? false
    }

    private func partnerBecameWritable() {
        if pendingRead, let context {
            pendingRead = false
            context.read()
        }
    }

    /// Everything read from the partner has been handed to us; once it is written, shut
    /// our output.
    private func partnerEndOutput() {
        guard let context else { return }
        let written = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: written)
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        written.futureResult.flatMap {
            bound.value.context.close(mode: .output)
        }.whenComplete { result in
            let (handler, context) = bound.value
            guard case .success = result else {
                context.close(promise: nil)
                return
            }
            handler.outputEnded = true
            if handler.inputEnded {
                context.close(promise: nil)
            }
        }
    }

    private func partnerClose() {
        context?.close(promise: nil)
    }
}

@available(*, unavailable)
extension RelayHandler: Sendable {}
