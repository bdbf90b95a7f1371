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

    private struct Pending {
        let source: String
        let evict: @Sendable () -> Void
    }

    private struct State {
        var nextID: UInt64 = 0
        var pending: [UInt64: Pending] = [:]
        /// Each source's pending connections, oldest first.
        var bySource: [String: [UInt64]] = [:]
        var arrivals: UInt64 = 0
    }

    let limits: Limits
    private let state = NIOLockedValueBox(State())
    private let metrics: ProxyMetrics

    init(limits: Limits, metrics: ProxyMetrics = ProxyMetrics()) {
        self.limits = limits
        self.metrics = metrics
    }

    /// Connections counted now (tests and metrics).
    var pending: Int { state.withLockedValue { $0.pending.count } }

    /// Every connection that asked to be admitted, admitted or not, since start.
    var arrivals: UInt64 { state.withLockedValue { $0.arrivals } }

    enum Refusal: String, Error, CaseIterable {
        case total = "unauthenticated_cap"
        case perSource = "unauthenticated_source_cap"
    }

    /// What a source is counted as: its address. (Not an IPv6 /64: every pod of a
    /// podman bridge shares one, so one pod could keep the others out. A host that
    /// spreads a flood over many addresses meets the total cap, where each newcomer
    /// evicts the oldest pending connection of the largest source instead.)
    static func sourceKey(_ address: SocketAddress?) -> String {
        address?.ipAddress ?? "?"
    }

    /// Counts a new connection from `source`, or refuses it. When the total is full,
    /// the oldest pending connection of the source holding the most is closed
    /// (`evict`) to make room, if that source holds more than this one: a flood from
    /// a few sources cannot keep new peers out, it only churns its own connections.
    func admit(_ source: String, evict: @escaping @Sendable () -> Void) -> Result<Ticket, Refusal> {
        let (result, evicted) = state.withLockedValue { state -> (Result<Ticket, Refusal>, Pending?) in
            state.arrivals += 1
            let mine = state.bySource[source]?.count ?? 0
            guard mine < limits.perSource else { return (.failure(.perSource), nil) }
            var evicted: Pending?
            if state.pending.count >= limits.total {
                guard let (largest, ids) = state.bySource.max(by: { $0.value.count < $1.value.count }),
                    ids.count > mine + 1, let oldest = ids.first
                else { return (.failure(.total), nil) }
                evicted = state.pending.removeValue(forKey: oldest)
                state.bySource[largest]?.removeFirst()
                if state.bySource[largest]?.isEmpty == true { state.bySource[largest] = nil }
            }
            let id = state.nextID
            state.nextID += 1
            state.pending[id] = Pending(source: source, evict: evict)
            state.bySource[source, default: []].append(id)
            return (.success(Ticket(admission: self, id: id)), evicted)
        }
        if let evicted {
            metrics.inbound("unauthenticated_evicted")
            evicted.evict()
        }
        return result
    }

    fileprivate func release(_ id: UInt64) {
        state.withLockedValue { state in
            guard let pending = state.pending.removeValue(forKey: id) else { return }  // evicted already
            state.bySource[pending.source]?.removeAll { $0 == id }
            if state.bySource[pending.source]?.isEmpty == true { state.bySource[pending.source] = nil }
        }
    }

    /// One admitted connection's place in the count, given back once.
    final class Ticket: Sendable {
        private let admission: HandshakeAdmission
        private let id: UInt64

        fileprivate init(admission: HandshakeAdmission, id: UInt64) {
            self.admission = admission
            self.id = id
        }

        func release() { admission.release(id) }
    }
}

/// First in an inbound mTLS pipeline: closes a connection that sends nothing within
/// `timeout` of being accepted, then steps aside.
final class FirstByteTimeout: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let timeout: TimeAmount
    private let metrics: ProxyMetrics
    private var scheduled: Scheduled<Void>?

    init(timeout: TimeAmount, metrics: ProxyMetrics) {
        self.timeout = timeout
        self.metrics = metrics
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        let metrics = metrics
        scheduled = context.eventLoop.scheduleTask(in: timeout) {
            metrics.inbound("first_byte_timeout")
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

/// Gives the memory a flood of unauthenticated connections made the allocator keep back
/// to the system once the flood is over: glibc keeps freed memory in its arenas, and a
/// sidecar that handled 200,000 refused connections otherwise stays about 10 MB larger.
/// Looked at every `interval`; trims once when a busy interval (at least `busy` new
/// connections) is followed by a quiet one.
struct FloodAftermath {
    static let interval = TimeAmount.seconds(Int64(5))
    static let busy: UInt64 = 1000

    private var lastArrivals: UInt64 = 0
    private var lastWasBusy = false

    /// The arrivals counted now; whether to trim.
    mutating func observe(arrivals: UInt64) -> Bool {
        let delta = arrivals - lastArrivals
        lastArrivals = arrivals
        defer { lastWasBusy = delta >= Self.busy }
        return lastWasBusy && delta < Self.busy / 10
    }
}

/// glibc's `malloc_trim` (in <malloc.h>, which the Glibc module does not export).
@_silgen_name("malloc_trim")
func glibcMallocTrim(_ pad: Int) -> Int32
