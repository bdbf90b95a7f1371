import NIOCore

/// Moves bytes between two channels, one handler at each end.
///
/// - Backpressure: a side reads (`autoRead` is off) only while its partner is writable,
///   so a slow receiver stops the sender instead of growing a queue. Per connection at
///   most one read (≤ the channel's receive allocation) plus the partner's write-buffer
///   high-water mark are held.
/// - Half-close: when one side's input ends, everything read from it is written and
///   flushed to the partner, then the partner's output is shut down (TCP FIN, or TLS
///   close_notify then FIN) while the other direction goes on. When both inputs have
///   ended, both channels close.
/// - Errors, resets and idle timeouts close both sides.
final class RelayHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: RelayHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var inputEnded = false
    private let onClose: (@Sendable () -> Void)?
    /// Bytes moved out of this side into the partner.
    private(set) var bytesRelayed: UInt64 = 0

    private init(onClose: (@Sendable () -> Void)?) {
        self.onClose = onClose
    }

    /// Two handlers linked to each other; put one in each channel's pipeline.
    static func pair(onClose: (@Sendable () -> Void)? = nil) -> (RelayHandler, RelayHandler) {
        let first = RelayHandler(onClose: onClose)
        let second = RelayHandler(onClose: nil)
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        self.partner = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        bytesRelayed &+= UInt64(buffer.readableBytes)
        partner?.partnerWrite(buffer)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.partnerFlush()
        // autoRead is off on relayed channels: ask for the next read here, through the
        // same backpressure gate as any other read request.
        read(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        let partner = self.partner
        self.partner = nil
        partner?.partnerClose()
        if let onClose {
            onClose()
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, event == .inputClosed else {
            if event is IdleStateHandler.IdleStateEvent {
                context.close(promise: nil)
                return
            }
            context.fireUserInboundEventTriggered(event)
            return
        }
        inputEnded = true
        partner?.partnerEndOutput()
        if partner?.inputEnded ?? true {
            closeBoth(context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
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

    private func closeBoth(context: ChannelHandlerContext) {
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
        let promise = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: promise)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        promise.futureResult.whenComplete { _ in
            bound.value.close(mode: .output, promise: nil)
        }
    }

    private func partnerClose() {
        context?.close(promise: nil)
    }
}

@available(*, unavailable)
extension RelayHandler: Sendable {}
