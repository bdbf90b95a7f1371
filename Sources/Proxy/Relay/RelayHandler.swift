import Logging
import Metrics
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// Moves bytes between two channels, one handler at each end, by `RelayState`'s rules
/// (the direct relay's too): back-pressure (`autoRead` is off, and a side reads only
/// while its partner is writable, so a slow receiver stops the sender: per connection
/// at most one read plus the partner's write-buffer high-water mark are held),
/// half-close (the partner's output is shut after what was read is written, TCP FIN or
/// TLS close_notify then FIN, while the other direction goes on; each channel closes
/// once both its ends are done, so no queued byte is dropped by a close), errors and
/// resets closing both, and idleness: one timer per pair sweeps every quarter of
/// `idleTimeout`, not a clock read on every read and write.
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// The rules' state, shared by the pair's two handlers (on one event loop).
    private final class Pair {
        var state = RelayState()
    }

    private let pair: Pair
    private let side: RelayState.Side
    private var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    /// Set on the first handler of a pair only: it runs the pair's idle sweep.
    private let idleTimeout: TimeAmount?
    private var idleCheck: Scheduled<Void>?
    /// Bytes moved out of this side into the partner.
    private(set) var bytesRelayed: UInt64 = 0

    private let logger: Logger
    /// The flow whose bytes this pair counts; downstream reads from the flow's source,
    /// upstream from its destination.
    private let flow: Flow?

    private init(pair: Pair, side: RelayState.Side, idleTimeout: TimeAmount?, flow: Flow?, logger: Logger) {
        self.pair = pair
        self.side = side
        self.idleTimeout = idleTimeout
        self.flow = flow
        self.logger = logger
    }

    /// Two handlers linked to each other; put one in each channel's pipeline. Both
    /// channels must be on the same event loop. The first goes on the downstream
    /// connection (the flow's source).
    static func pair(idleTimeout: TimeAmount, flow: Flow? = nil, logger: Logger) -> (RelayHandler, RelayHandler) {
        let pair = Pair()
        let first = RelayHandler(pair: pair, side: .downstream, idleTimeout: idleTimeout, flow: flow, logger: logger)
        let second = RelayHandler(pair: pair, side: .upstream, idleTimeout: nil, flow: flow, logger: logger)
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
        environment.metrics.relay(direct: false)
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
        // A channel already full when the pair is built holds its partner's reads at once.
        _ = pair.state.writable(side, context.channel.isWritable)
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
        let period = idleTimeout.nanoseconds / Int64(RelayState.sweepsPerIdleTimeout)
        idleCheck = context.eventLoop.scheduleTask(in: .nanoseconds(period)) {
            let (handler, context) = bound.value
            handler.checkIdle(context: context)
        }
    }

    private func checkIdle(context: ChannelHandlerContext) {
        if pair.state.sweep(bytesMoved: bytesRelayed &+ (partner?.bytesRelayed ?? 0)) {
            flow?.closing(.timeout)
            carry([.abort], context: context)
            return
        }
        scheduleIdleCheck(context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytesRelayed &+= UInt64(buffer.readableBytes)
        if let flow {
            if side == .downstream {
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
        // same back-pressure gate as any other read request.
        read(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleCheck?.cancel()
        logger.debug(
            "relay side closed",
            metadata: [
                "side": "\(side)", "bytes_out": "\(bytesRelayed)", "input_ended": "\(pair.state.isInputEnded(side))",
                "output_ended": "\(pair.state.isOutputEnded(side))",
            ]
        )
        carry(pair.state.closed(side), context: context)
        partner = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, event == .inputClosed else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        carry(pair.state.inputEnded(side), context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("relay error", metadata: ["side": "\(side)", "error": "\(error)"])
        flow?.closing(Self.isReset(error) ? .reset : .error)
        carry(pair.state.failed(), context: context)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if pair.state.writable(side, context.channel.isWritable) != nil {
            partner?.partnerMayRead()
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        if pair.state.requestRead(side) { context.read() }
    }

    /// A peer that reset its connection (or vanished under a write).
    private static func isReset(_ error: any Error) -> Bool {
        guard let error = error as? IOError else { return false }
        return error.errnoCode == ECONNRESET || error.errnoCode == EPIPE
    }

    /// Carries out the rules' actions; `context` is this side's.
    private func carry(_ actions: [RelayState.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .endOutput(let target):
                (target == side ? self : partner)?.endOutput()
            case .close(let target):
                (target == side ? self.context : partner?.context)?.close(promise: nil)
            case .abort:
                partner?.context?.close(promise: nil)
                context.close(promise: nil)
            }
        }
    }

    // MARK: calls from the partner

    private func partnerWrite(_ buffer: ByteBuffer) {
        context?.write(wrapOutboundOut(buffer), promise: nil)
    }

    private func partnerFlush() {
        context?.flush()
    }

    /// The partner drained: a read held back for it goes now.
    private func partnerMayRead() {
        if let context { read(context: context) }
    }

    /// Everything read from the partner has been handed to us; once it is written, shut
    /// our output.
    private func endOutput() {
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
            handler.carry(handler.pair.state.outputEnded(handler.side), context: context)
        }
    }
}

@available(*, unavailable)
extension RelayHandler: Sendable {}
