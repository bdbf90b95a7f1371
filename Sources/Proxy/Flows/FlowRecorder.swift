import Logging
import MeshAPI
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The sidecar's flow table: the flows open now, the newest finished ones in a ring
/// buffer (`flows.capacity`), and the readers of `GET /flows?follow=1`.
///
/// Recording is per connection (a few lock acquisitions when it opens, is decided and
/// ends) plus one relaxed atomic add per relayed read. Follow readers that fall behind
/// lose events rather than hold memory or slow the data plane: each reader may have at
/// most `FlowRecorder.followBacklog` events unwritten; what is dropped beyond that is
/// counted (`overruns`, `beemesh_flow_events_dropped_total`) and told to the reader in
/// an `overrun` event as soon as it catches up.
final class FlowRecorder: Sendable {
    /// A follow reader: `deliver` is handed each event's NDJSON line and answers false
    /// when the reader's backlog is full (the event is dropped and counted).
    final class Subscription: Sendable {
        let filter: FlowFilter
        let deliver: @Sendable ([UInt8]) -> Bool
        private let dropped = NIOLockedValueBox<UInt64>(0)

        init(filter: FlowFilter, deliver: @escaping @Sendable ([UInt8]) -> Bool) {
            self.filter = filter
            self.deliver = deliver
        }

        /// Delivers `line`, preceded by an overrun event if events were dropped since the
        /// last delivery. Returns false when it had to be dropped.
        fileprivate func offer(_ line: [UInt8]) -> Bool {
            dropped.withLockedValue { dropped in
                if dropped > 0 {
                    guard let notice = try? MeshJSON.line(FlowEvent.overrun(dropped: dropped)), deliver(notice) else {
                        dropped += 1
                        return false
                    }
                    dropped = 0
                }
                guard deliver(line) else {
                    dropped += 1
                    return false
                }
                return true
            }
        }
    }

    /// Events a follow reader may have queued and unwritten.
    static let followBacklog = 1024

    let capacity: Int
    let isRecording: Bool
    private let nextID = Atomic<UInt64>(1)
    private let followers = Atomic<Int>(0)
    private let draining = Atomic<Bool>(false)
    private let now: @Sendable () -> Date

    private struct State {
        var ring: FlowRing
        var open: [UInt64: Flow] = [:]
        var openByDirection: [FlowRecord.Direction: Int] = [:]
        var subscriptions: [ObjectIdentifier: Subscription] = [:]
        var overruns: UInt64 = 0
    }

    private let state: NIOLockedValueBox<State>
    private let metrics = RequestMetrics()
    private let flowMetrics = FlowMetrics()

    init(capacity: Int, recording: Bool, now: @escaping @Sendable () -> Date = { Date() }) {
        self.capacity = capacity
        self.isRecording = recording
        self.now = now
        self.state = NIOLockedValueBox(State(ring: FlowRing(capacity: recording ? capacity : 0)))
    }

    // MARK: the data plane

    /// A flow for a connection just accepted, finished when the channel closes; nil
    /// when recording is off.
    func open(_ channel: any Channel, direction: FlowRecord.Direction) -> Flow? {
        guard isRecording else { return nil }
        let local = channel.localAddress
        let record = FlowRecord(
            id: nextID.wrappingAdd(1, ordering: .relaxed).oldValue,
            start: now(),
            direction: direction,
            source: .init(address: channel.remoteAddress.map(\.text), identity: "unauthenticated"),
            destination: .init(
                service: nil,
                address: local.map(\.text),
                port: UInt16(truncatingIfNeeded: local?.port ?? 0),
                identity: nil
            )
        )
        let flow = Flow(id: record.id, record: record, recorder: self)
        let open = state.withLockedValue { state in
            state.open[flow.id] = flow
            state.openByDirection[direction, default: 0] += 1
            return state.openByDirection[direction, default: 0]
        }
        flowMetrics.active[direction]?.record(open)
        channel.closeFuture.whenComplete { _ in flow.channelClosed() }
        return flow
    }

    /// Moves a flow that ended from the open table into the ring, and reports it.
    func finish(_ flow: Flow) {
        var record = flow.snapshot
        record.end = now()
        if record.closeReason == nil {
            record.closeReason = draining.load(ordering: .relaxed) ? .timeout : .done
        }
        let finished = record
        let (open, evicted) = state.withLockedValue { state in
            guard state.open.removeValue(forKey: flow.id) != nil else { return (-1, false) }
            state.openByDirection[finished.direction, default: 1] -= 1
            let before = state.ring.evicted
            state.ring.append(finished)
            return (state.openByDirection[finished.direction, default: 0], state.ring.evicted != before)
        }
        guard open >= 0 else { return }
        flowMetrics.ended(record, open: open, evicted: evicted)
        publish(.flowEnd(record))
    }

    /// An HTTP request of some flow was answered (by the app or by a 403).
    func requestAnswered(status: Int?, latency: Double?, direction: FlowRecord.Direction) {
        metrics.answered(status: status, latency: latency, direction: direction)
    }

    /// From the drain deadline on, flows cut without another reason end as `timeout`.
    func markDraining() { draining.store(true, ordering: .relaxed) }

    // MARK: readers

    /// The flows open now and the finished ones still held, oldest first, that match.
    func list(_ filter: FlowFilter) -> FlowList {
        let (finished, open, evicted, overruns) = state.withLockedValue { state in
            (state.ring.records, Array(state.open.values), state.ring.evicted, state.overruns)
        }
        var flows = finished + open.map(\.snapshot)
        flows.sort { ($0.start, $0.id) < ($1.start, $1.id) }
        return FlowList(
            flows: filter.apply(flows, now: now()),
            capacity: capacity,
            evicted: evicted,
            overruns: overruns,
            recording: isRecording
        )
    }

    var openCount: Int { state.withLockedValue { $0.open.count } }

    var followerCount: Int { followers.load(ordering: .relaxed) }

    /// Whether any follow reader is connected (events are built only then).
    var hasFollowers: Bool { followers.load(ordering: .relaxed) > 0 }

    /// Finished flows pushed out of the ring, and follow events dropped, since start.
    var losses: (evicted: UInt64, overruns: UInt64) {
        state.withLockedValue { ($0.ring.evicted, $0.overruns) }
    }

    func subscribe(_ subscription: Subscription) {
        state.withLockedValue { $0.subscriptions[ObjectIdentifier(subscription)] = subscription }
        followers.wrappingAdd(1, ordering: .relaxed)
    }

    func unsubscribe(_ subscription: Subscription) {
        let removed = state.withLockedValue { $0.subscriptions.removeValue(forKey: ObjectIdentifier(subscription)) }
        if removed != nil { followers.wrappingSubtract(1, ordering: .relaxed) }
    }

    /// Hands `event` to every follow reader whose filter it matches (encoded once).
    func publish(_ event: FlowEvent) {
        guard followers.load(ordering: .relaxed) > 0, let flow = event.flow else { return }
        let subscriptions = state.withLockedValue { Array($0.subscriptions.values) }
        var subject = flow
        if case .httpRequest(_, let exchange) = event { subject.http = [exchange] }
        let time = now()
        var line: [UInt8]?
        var dropped: UInt64 = 0
        for subscription in subscriptions {
            var filter = subscription.filter
            filter.limit = nil
            filter.since = nil
            guard filter.matches(subject, now: time) else { continue }
            if line == nil { line = try? MeshJSON.line(event) }
            guard let line else { return }
            if !subscription.offer(line) { dropped += 1 }
        }
        if dropped > 0 {
            state.withLockedValue { $0.overruns += dropped }
            flowMetrics.eventsDropped.increment(by: Int64(dropped))
        }
    }
}

/// The per-flow metrics, made once (as `RequestMetrics`): a flow's start and end count
/// without a registry lookup.
private struct FlowMetrics: Sendable {
    let active: [FlowRecord.Direction: Gauge]
    private let connections: [FlowRecord.Direction: [FlowRecord.Verdict: Counter]]
    private let received: [FlowRecord.Direction: Counter]
    private let sent: [FlowRecord.Direction: Counter]
    private let evicted = Counter(label: "beemesh_flow_records_evicted_total")
    let eventsDropped = Counter(label: "beemesh_flow_events_dropped_total")

    init() {
        func byDirection<M>(_ make: (FlowRecord.Direction) -> M) -> [FlowRecord.Direction: M] {
            Dictionary(uniqueKeysWithValues: FlowRecord.Direction.allCases.map { ($0, make($0)) })
        }
        active = byDirection { Gauge(label: "beemesh_active_flows", dimensions: [("direction", $0.rawValue)]) }
        received = byDirection {
            Counter(label: "beemesh_received_bytes_total", dimensions: [("direction", $0.rawValue)])
        }
        sent = byDirection { Counter(label: "beemesh_sent_bytes_total", dimensions: [("direction", $0.rawValue)]) }
        connections = byDirection { direction in
            Dictionary(
                uniqueKeysWithValues: FlowRecord.Verdict.allCases.map { verdict in
                    (
                        verdict,
                        Counter(
                            label: "beemesh_connections_total",
                            dimensions: [("direction", direction.rawValue), ("verdict", verdict.rawValue)]
                        )
                    )
                }
            )
        }
    }

    func ended(_ record: FlowRecord, open: Int, evicted flowEvicted: Bool) {
        if flowEvicted { evicted.increment() }
        active[record.direction]?.record(open)
        connections[record.direction]?[record.verdict]?.increment()
        received[record.direction]?.increment(by: Int64(record.bytesIn))
        sent[record.direction]?.increment(by: Int64(record.bytesOut))
    }
}

/// The per-request metrics, made once: looking a metric up by label and dimensions
/// goes through the backend's registry (a lock and string hashing), too much to pay on
/// every HTTP request of a keep-alive connection.
private struct RequestMetrics: Sendable {
    private static let classes = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"]
    /// By direction (inbound, outbound), then status class.
    private let requests: [[Counter]]
    private let latency: [Timer]

    init() {
        let directions: [FlowRecord.Direction] = [.inbound, .outbound]
        requests = directions.map { direction in
            Self.classes.map { statusClass in
                Counter(
                    label: "beemesh_http_requests_total",
                    dimensions: [("direction", direction.rawValue), ("status_class", statusClass)]
                )
            }
        }
        latency = directions.map { direction in
            Timer(label: "beemesh_http_request_duration_seconds", dimensions: [("direction", direction.rawValue)])
        }
    }

    func answered(status: Int?, latency seconds: Double?, direction: FlowRecord.Direction) {
        let row = direction == .inbound ? 0 : 1
        let noStatus = Self.classes.count - 1
        let column = status.map { (1...5).contains($0 / 100) ? $0 / 100 - 1 : noStatus } ?? noStatus
        requests[row][column].increment()
        if let seconds { latency[row].recordNanoseconds(Int64(seconds * 1e9)) }
    }
}
