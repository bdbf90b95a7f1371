import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import Policy

/// The inbound connections a policy admitted and that are still open, with what their
/// decision was about, so that a policy change can re-decide them: a flow the new
/// policies deny is closed on both sides (closing the downstream connection ends its
/// relay, or cuts the direct relay that took the connection over) and recorded as
/// revoked, naming the policy.
final class LiveFlows: Sendable {
    struct Entry: Sendable {
        /// Kept so that the channel's identity stays unique while the entry lives; let go
        /// at the hand-over to a direct relay.
        var channel: (any Channel)?
        let request: PolicyRequest
        let flow: Flow?
        let logger: Logger
        var cut: @Sendable () -> Void
        /// A policy change denied it and is cutting it.
        var revoked = false
    }

    private let flows = NIOLockedValueBox<[ObjectIdentifier: Entry]>([:])
    private let metrics: ProxyMetrics

    init(metrics: ProxyMetrics = ProxyMetrics()) {
        self.metrics = metrics
    }

    func register(_ channel: any Channel, request: PolicyRequest, flow: Flow?, logger: Logger) {
        let id = ObjectIdentifier(channel)
        let entry = Entry(channel: channel, request: request, flow: flow, logger: logger) {
            channel.close(promise: nil)
        }
        flows.withLockedValue { $0[id] = entry }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.flows.withLockedValue { flows in
                // Gone already when the flow was handed over: it moved to its key.
                flows[id] = nil
            }
        }
    }

    /// The flow of `channel` lives on in a direct relay, known by `key` from now on;
    /// `cut` ends it. False, changing nothing, when a policy change is revoking it: it
    /// must end with its channel.
    func handOver(_ channel: any Channel, to key: HandedOverConnection, cut: @escaping @Sendable () -> Void) -> Bool {
        flows.withLockedValue { flows in
            let id = ObjectIdentifier(channel)
            guard flows[id]?.revoked != true else { return false }
            guard var entry = flows.removeValue(forKey: id) else { return true }
            entry.channel = nil
            entry.cut = cut
            flows[ObjectIdentifier(key)] = entry
            return true
        }
    }

    /// The flow handed over as `key` ended.
    func release(_ key: HandedOverConnection) {
        _ = flows.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(key)) }
    }

    var count: Int { flows.withLockedValue { $0.count } }

    /// Re-decides every live flow; returns how many were revoked.
    @discardableResult
    func revoke(under set: PolicySet) -> Int {
        let snapshot = flows.withLockedValue { Array($0) }
        var revoked = 0
        for (id, entry) in snapshot {
            let decision = set.evaluate(entry.request)
            guard !decision.isAllowed else { continue }
            // Marked and read under the lock: a hand-over to a direct relay either
            // happened before (its cut is the one called) or is refused.
            let cut = flows.withLockedValue { flows -> (@Sendable () -> Void)? in
                // Revoked once: a second policy change meanwhile does not count it again.
                guard flows[id]?.revoked == false else { return nil }
                flows[id]?.revoked = true
                return flows[id]?.cut
            }
            guard let cut else { continue }
            revoked += 1
            entry.logger.warning(
                "flow revoked by a policy change",
                metadata: ["decision": "\(decision)", "policy": "\(decision.policyLabel)"]
            )
            metrics.flowRevoked(by: decision)
            entry.flow?.revoked(by: decision)
            cut()
        }
        return revoked
    }
}
