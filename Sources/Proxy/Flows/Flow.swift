import Logging
import MeshAPI
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import Policy
import Synchronization

/// One connection's entry in the flow table while it is open: handlers fill in what
/// they learn (identities, destination, TLS, the decision, HTTP requests), the relay
/// counts bytes, and the channel's close finishes it into the recorder's ring.
///
/// Shared between the connection's event loop and admin API readers: bytes are
/// relaxed atomics (one add per read on the hot path), the rest is behind a lock that
/// is taken a few times per connection and once or twice per HTTP request.
final class Flow: Sendable {
    let id: UInt64
    private let recorder: FlowRecorder
    private let record: NIOLockedValueBox<FlowRecord>
    private let bytesIn = Atomic<UInt64>(0)
    private let bytesOut = Atomic<UInt64>(0)
    /// The HTTP requests seen, the newest `keptRequests` in full, and those forwarded
    /// and waiting for their response: apart from the record, so that a request takes
    /// one lock and copies no strings of the record.
    private let exchanges = NIOLockedValueBox(HTTPExchanges(capacity: Flow.keptRequests))
    let direction: FlowRecord.Direction

    init(id: UInt64, record: FlowRecord, recorder: FlowRecorder) {
        self.id = id
        self.direction = record.direction
        self.record = NIOLockedValueBox(record)
        self.recorder = recorder
    }

    /// The record as of now, byte counts and HTTP requests included.
    var snapshot: FlowRecord {
        var copy = record.withLockedValue { $0 }
        exchanges.withLockedValue { exchanges in
            guard exchanges.count > 0 else { return }
            copy.protocol = "http"
            copy.requests = exchanges.count
            copy.http = exchanges.kept
        }
        copy.bytesIn = bytesIn.load(ordering: .relaxed)
        copy.bytesOut = bytesOut.load(ordering: .relaxed)
        return copy
    }

    // MARK: filled in by the handlers

    func update(_ change: (inout FlowRecord) -> Void) {
        record.withLockedValue { change(&$0) }
    }

    /// The mesh hop's TLS parameters and, inbound, the verified peer.
    func handshakeCompleted(version: String, cipher: String, peer: String?) {
        record.withLockedValue { record in
            record.tls = FlowRecord.TLS(version: version, cipher: cipher)
            if let peer { record.source.identity = peer }
        }
    }

    /// The decision that admitted or refused the flow; a flow-start event follows it.
    func decided(_ decision: PolicyDecision) {
        decided(
            FlowRecord.Verdict(decision),
            policy: decision.policyLabel,
            rule: decision.decidedBy?.rule,
            audits: decision.audits
        )
        if !decision.isAllowed { update { $0.reason = "policy_denied" } }
    }

    /// A verdict reached without a local policy (the remote sidecar answered, or nothing
    /// could serve it).
    func decided(
        _ verdict: FlowRecord.Verdict,
        policy: String? = nil,
        rule: Int? = nil,
        audits: [PolicyDecision.Match] = [],
        reason: String? = nil
    ) {
        let started = record.withLockedValue { record in
            record.verdict = verdict
            record.policy = policy ?? record.policy
            record.rule = rule ?? record.rule
            record.audits = audits.map(\.description)
            record.reason = reason ?? record.reason
            return record
        }
        if verdict == .allowed || verdict == .audit { recorder.publish(.flowStart(started)) }
    }

    /// The flow could not be relayed (handshake, preface, upstream): verdict `error`.
    func failed(_ reason: String) {
        record.withLockedValue { record in
            record.verdict = .error
            if record.reason == nil { record.reason = reason }
            if record.closeReason == nil { record.closeReason = .error }
        }
    }

    /// The reason the flow will end with, unless one was set already.
    func closing(_ reason: FlowRecord.CloseReason) {
        record.withLockedValue { record in
            if record.closeReason == nil { record.closeReason = reason }
        }
    }

    /// A policy change denied the open flow: it is being closed.
    func revoked(by decision: PolicyDecision) {
        record.withLockedValue { record in
            record.verdict = .revoked
            record.policy = decision.policyLabel
            record.rule = decision.decidedBy?.rule
            record.closeReason = .revoked
            record.reason = "policy_changed"
        }
    }

    // MARK: the relay

    @inline(__always)
    func received(fromSource count: Int) {
        bytesIn.wrappingAdd(UInt64(truncatingIfNeeded: count), ordering: .relaxed)
    }

    @inline(__always)
    func received(fromDestination count: Int) {
        bytesOut.wrappingAdd(UInt64(truncatingIfNeeded: count), ordering: .relaxed)
    }

    // MARK: HTTP

    /// HTTP requests a flow keeps in full, the newest; `requests` counts them all, so a
    /// keep-alive connection that carries millions of requests holds a bounded record.
    static let keptRequests = 32

    /// A request was decided. Denied requests are answered at once (403 by the gate);
    /// allowed ones wait for the app's response head. One lock acquisition.
    func httpRequest(_ exchange: HTTPExchange, now: NIODeadline) {
        let awaiting = exchange.status == nil
        exchanges.withLockedValue { exchanges in
            exchanges.append(exchange, awaitingSince: awaiting ? now : nil)
        }
        if !awaiting { answered(exchange) }
    }

    /// The response head of the oldest forwarded request arrived. One lock acquisition.
    func httpResponse(status: Int, now: NIODeadline) {
        let answered = exchanges.withLockedValue { $0.answerOldest(status: status, now: now) }
        guard let (exchange, latency) = answered else { return }
        guard let exchange else {
            // Pipelined deeper than the flow keeps: counted, not kept.
            recorder.requestAnswered(status: status, latency: latency, direction: direction)
            return
        }
        self.answered(exchange)
    }

    private func answered(_ exchange: HTTPExchange) {
        recorder.requestAnswered(status: exchange.status, latency: exchange.latency, direction: direction)
        guard recorder.hasFollowers else { return }
        var summary = record.withLockedValue { $0 }
        summary.protocol = "http"
        summary.requests = exchanges.withLockedValue { $0.count }
        summary.bytesIn = bytesIn.load(ordering: .relaxed)
        summary.bytesOut = bytesOut.load(ordering: .relaxed)
        recorder.publish(.httpRequest(summary, exchange))
    }

    // MARK: the end

    /// The downstream connection closed: the flow is over.
    func finish() {
        recorder.finish(self)
    }

    private let handedOver = Atomic<Bool>(false)

    /// A direct relay took the connection over from its channel: the relay's end, not
    /// the channel's close, finishes the flow.
    func handOver() {
        handedOver.store(true, ordering: .relaxed)
    }

    /// Finishes the flow as its channel closes, unless a direct relay took it over.
    func channelClosed() {
        if !handedOver.load(ordering: .relaxed) { finish() }
    }
}

extension FlowRecord.Verdict {
    /// What a policy decision makes of a flow or request: denied, allowed, or allowed
    /// with an AUDIT rule recording it.
    init(_ decision: PolicyDecision) {
        self = !decision.isAllowed ? .denied : decision.audits.isEmpty ? .allowed : .audit
    }
}

/// A flow's HTTP requests: a ring of the newest ones in full, the total count, and the
/// forwarded ones waiting for a response (oldest first: HTTP/1.1 answers in order).
struct HTTPExchanges: Sendable {
    private var ring: [HTTPExchange] = []
    private let capacity: Int
    /// Requests seen in all; request number `n` is in `ring[n % capacity]` while kept.
    private(set) var count: UInt64 = 0
    private var awaiting: [(number: UInt64, since: NIODeadline)] = []
    private var awaitingHead = 0

    init(capacity: Int) {
        self.capacity = capacity
        ring.reserveCapacity(capacity)
    }

    mutating func append(_ exchange: HTTPExchange, awaitingSince: NIODeadline?) {
        if ring.count < capacity {
            ring.append(exchange)
        } else {
            ring[Int(count % UInt64(capacity))] = exchange
        }
        if let awaitingSince { awaiting.append((count, awaitingSince)) }
        count += 1
    }

    /// Answers the oldest waiting request: its exchange if still kept (nil if pushed out
    /// of the ring) and its latency in seconds; nil when no request waits.
    mutating func answerOldest(status: Int, now: NIODeadline) -> (HTTPExchange?, Double)? {
        guard awaitingHead < awaiting.count else { return nil }
        let (number, since) = awaiting[awaitingHead]
        awaitingHead += 1
        if awaitingHead == awaiting.count {
            awaiting.removeAll(keepingCapacity: true)
            awaitingHead = 0
        } else if awaitingHead >= 64 {  // a pipeline that never empties
            awaiting.removeFirst(awaitingHead)
            awaitingHead = 0
        }
        let latency = Double((now - since).nanoseconds) / 1e9
        guard number + UInt64(ring.count) >= count else { return (nil, latency) }
        let slot = Int(number % UInt64(capacity))
        ring[slot].status = status
        ring[slot].latency = latency
        return (ring[slot], latency)
    }

    /// The kept requests, oldest first.
    var kept: [HTTPExchange] {
        guard ring.count == capacity else { return ring }
        let oldest = Int(count % UInt64(capacity))
        return Array(ring[oldest...] + ring[..<oldest])
    }
}
