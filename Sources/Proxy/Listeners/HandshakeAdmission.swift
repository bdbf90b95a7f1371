import Logging
import MeshTLS
import Metrics
import NIOConcurrencyHelpers
import NIOCore

/// Caps what unauthenticated peers can hold of the inbound mTLS listener: the
/// connections that have not finished their handshake, in total and per source
/// address. A connection over either cap is closed as soon as it is accepted, before
/// a flow, a TLS object or a timer is made for it; one that sends nothing within
/// `timeouts.firstByte` is closed too. A peer that completes its handshake leaves the
/// count, so a flood of idle or half-sent ClientHellos never starves authenticated
/// peers, whose connections finish their handshakes in milliseconds.
///
/// | counted from | until |
/// |---|---|
/// | accept | `TLSHandshakeCompleted`, or the connection closes |
final class HandshakeAdmission: Sendable {
    struct Limits: Sendable {
        var total: Int
        var perSource: Int
    }

    private struct State {
        var total = 0
        var bySource: [String: Int] = [:]
    }

    let limits: Limits
    private let state = NIOLockedValueBox(State())

    init(limits: Limits) {
        self.limits = limits
    }

    /// Connections counted now (tests and metrics).
    var pending: Int { state.withLockedValue { $0.total } }

    /// Counts a new connection from `source`, or refuses it (nil) with the cap it hit.
    func admit(_ source: String) -> Result<Ticket, Refusal> {
        state.withLockedValue { state in
            guard state.total < limits.total else { return .failure(.total) }
            let count = state.bySource[source, default: 0]
            guard count < limits.perSource else { return .failure(.perSource) }
            state.total += 1
            state.bySource[source] = count + 1
            return .success(Ticket(admission: self, source: source))
        }
    }

    enum Refusal: String, Error {
        case total = "unauthenticated_cap"
        case perSource = "unauthenticated_source_cap"
    }

    fileprivate func release(_ source: String) {
        state.withLockedValue { state in
            state.total -= 1
            let left = state.bySource[source, default: 1] - 1
            state.bySource[source] = left > 0 ? left : nil
        }
    }

    /// One admitted connection's place in the count, given back once.
    final class Ticket: Sendable {
        private let admission: HandshakeAdmission
        private let source: String
        private let released = NIOLockedValueBox(false)

        fileprivate init(admission: HandshakeAdmission, source: String) {
            self.admission = admission
            self.source = source
        }

        func release() {
            let first = released.withLockedValue { released in
                defer { released = true }
                return !released
            }
            if first { admission.release(source) }
        }
    }
}

/// First in an inbound mTLS pipeline: closes a connection that sends nothing within
/// `timeout` of being accepted, then steps aside.
final class FirstByteTimeout: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let timeout: TimeAmount
    private var scheduled: Scheduled<Void>?

    init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        scheduled = context.eventLoop.scheduleTask(in: timeout) {
            Counter(label: "beemesh_inbound_connections_total", dimensions: [("result", "first_byte_timeout")])
                .increment()
            bound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        scheduled?.cancel()
        scheduled = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        scheduled?.cancel()
        scheduled = nil
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// After the TLS handler: gives the connection's admission ticket back when its
/// handshake completes, then steps aside.
final class HandshakeAdmitted: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let ticket: HandshakeAdmission.Ticket

    init(ticket: HandshakeAdmission.Ticket) {
        self.ticket = ticket
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is TLSHandshakeCompleted {
            ticket.release()
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

@available(*, unavailable)
extension FirstByteTimeout: Sendable {}

@available(*, unavailable)
extension HandshakeAdmitted: Sendable {}
