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
    /// Forwarded HTTP requests still waiting for their response, by sequence number.
    private let awaitingResponse = NIOLockedValueBox<[(sequence: UInt64, started: NIODeadline)]>([])
    let direction: FlowRecord.Direction

    init(id: UInt64, record: FlowRecord, recorder: FlowRecorder) {
        self.id = id
        self.direction = record.direction
        self.record = NIOLockedValueBox(record)
        self.recorder = recorder
    }

    /// The record as of now, byte counts included.
    var snapshot: FlowRecord {
        var copy = record.withLockedValue { $0 }
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
    /// allowed ones wait for the app's response head.
    func httpRequest(_ exchange: HTTPExchange, now: NIODeadline) {
        let sequence = record.withLockedValue { record in
            record.protocol = "http"
            if record.http.count == Self.keptRequests { record.http.removeFirst() }
            record.http.append(exchange)
            record.requests += 1
            return record.requests - 1
        }
        if exchange.status != nil {
            answered(exchange)
        } else {
            awaitingResponse.withLockedValue { $0.append((sequence, now)) }
        }
    }

    /// The response head of the oldest forwarded request arrived.
    func httpResponse(status: Int, now: NIODeadline) {
        guard let (sequence, started) = awaitingResponse.withLockedValue({ $0.isEmpty ? nil : $0.removeFirst() })
        else { return }
        let latency = Double((now - started).nanoseconds) / 1e9
        let kept = record.withLockedValue { record -> HTTPExchange? in
            let position = Int(sequence) - (Int(record.requests) - record.http.count)
            guard position >= 0 else { return nil }  // pipelined deeper than the flow keeps
            record.http[position].status = status
            record.http[position].latency = latency
            return record.http[position]
        }
        guard let kept else {
            recorder.requestAnswered(status: status, latency: latency, direction: direction)
            return
        }
        answered(kept)
    }

    private func answered(_ exchange: HTTPExchange) {
        recorder.requestAnswered(status: exchange.status, latency: exchange.latency, direction: direction)
        guard recorder.hasFollowers else { return }
        var summary = record.withLockedValue { $0 }
        summary.http = []
        summary.bytesIn = bytesIn.load(ordering: .relaxed)
        summary.bytesOut = bytesOut.load(ordering: .relaxed)
        recorder.publish(.httpRequest(summary, exchange))
    }

    // MARK: the end

    /// The downstream connection closed: the flow is over.
    func finish() {
        recorder.finish(self)
    }
}

extension FlowRecord.Verdict {
    /// What a policy decision makes of a flow or request: denied, allowed, or allowed
    /// with an AUDIT rule recording it.
    init(_ decision: PolicyDecision) {
        self = !decision.isAllowed ? .denied : decision.audits.isEmpty ? .allowed : .audit
    }
}
