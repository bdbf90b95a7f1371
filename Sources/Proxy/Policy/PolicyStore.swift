import Logging
import Metrics
import NIOConcurrencyHelpers
import Policy

/// The policies in force for this sidecar's workload: read from the policy directory,
/// compiled, swapped atomically on reload. Decisions read the current set without
/// waiting for a reload; a reload that fails for a file keeps that file's last good
/// version (see `PolicyLibrary`).
final class PolicyStore: Sendable {
    private struct State {
        var library = PolicyLibrary()
        var set: PolicySet
        var egress: EgressSet
    }

    let directory: String
    let workload: Workload
    let httpPorts: Set<UInt16>
    private let state: NIOLockedValueBox<State>
    private let logger: Logger

    private let metrics: ProxyMetrics

    init(
        directory: String,
        workload: Workload,
        httpPorts: Set<UInt16> = [],
        metrics: ProxyMetrics = ProxyMetrics(),
        logger: Logger
    ) {
        self.metrics = metrics
        self.directory = directory
        self.workload = workload
        self.httpPorts = httpPorts
        self.logger = logger
        self.state = NIOLockedValueBox(
            State(set: PolicySet([], for: workload, httpPorts: httpPorts), egress: EgressSet([], for: workload))
        )
    }

    /// The set decisions use now.
    var current: PolicySet { state.withLockedValue { $0.set } }

    /// The egress policies in force: captured destinations outside the mesh.
    var egress: EgressSet { state.withLockedValue { $0.egress } }

    /// Errors of the files whose current version is refused.
    var errors: [LocatedError] { state.withLockedValue { $0.library.errors } }

    /// Reads the directory again; returns true when the policies in force changed.
    @discardableResult
    func reload() -> Bool {
        let contents = PolicyDirectory.read(directory)
        let (update, set) = state.withLockedValue { state -> (PolicyLibrary.Update, PolicySet) in
            let update = state.library.update(contents)
            if update.changed {
                state.set = PolicySet(state.library.policies, for: workload, httpPorts: httpPorts)
                state.egress = EgressSet(state.library.egressPolicies, for: workload)
            }
            return (update, state.set)
        }
        for error in update.rejected {
            logger.error("policy file refused; its last good version stays in force", metadata: ["error": "\(error)"])
        }
        metrics.policyReload(ok: update.rejected.isEmpty, fileErrors: errors.count)
        if update.changed {
            logger.info(
                "policies loaded",
                metadata: [
                    "directory": "\(directory)", "policies": "\(set.policies.count)", "rules": "\(set.ruleCount)",
                    "egress_policies": "\(egress.policies.count)",
                    "files": "\(update.loaded.count)", "refused": "\(update.rejected.count)",
                ]
            )
            if set.ruleCount == 0 {
                logger.warning("no policy selects this workload: every inbound connection is denied (default-deny)")
            }
        }
        return update.changed
    }
}
