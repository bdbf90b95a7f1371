import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import Policy

/// The inbound connections a policy admitted and that are still open, with what their
/// decision was about, so that a policy change can re-decide them: a flow the new
/// policies deny is closed on both sides (closing the downstream connection ends its
/// relay) and recorded as revoked, naming the policy.
final class LiveFlows: Sendable {
    struct Entry: Sendable {
        let channel: any Channel
        let request: PolicyRequest
        let flow: Flow?
        let logger: Logger
    }

    private let flows = NIOLockedValueBox<[ObjectIdentifier: Entry]>([:])

    func register(_ channel: any Channel, request: PolicyRequest, flow: Flow?, logger: Logger) {
        let id = ObjectIdentifier(channel)
        flows.withLockedValue { $0[id] = Entry(channel: channel, request: request, flow: flow, logger: logger) }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.flows.withLockedValue { _ = $0.removeValue(forKey: id) }
        }
    }

    var count: Int { flows.withLockedValue { $0.count } }

    /// Re-decides every live flow; returns how many were revoked.
    @discardableResult
    func revoke(under set: PolicySet) -> Int {
        let snapshot = flows.withLockedValue { Array($0.values) }
        var revoked = 0
        for entry in snapshot {
            let decision = set.evaluate(entry.request)
            guard !decision.isAllowed else { continue }
            revoked += 1
            entry.logger.warning(
                "flow revoked by a policy change",
                metadata: ["decision": "\(decision)", "policy": "\(decision.policyLabel)"]
            )
            Counter(label: "beemesh_flows_revoked_total", dimensions: [("policy", decision.policyLabel)]).increment()
            entry.flow?.revoked(by: decision)
            entry.channel.close(promise: nil)
        }
        return revoked
    }
}
