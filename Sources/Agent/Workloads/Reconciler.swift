import Foundation
import Logging
import MeshAPI
import MeshIdentity
import NIOConcurrencyHelpers

/// Keeps podman running what the stored objects ask for: the shell around
/// `PodLifecycle`, which decides. On a thread of its own (podman's API is called
/// blocking), every second and at once after an apply or a delete, it observes the pods
/// (`PodRuntime`), hands what it saw to the instance with the time, and carries out the
/// directives that come back, reporting how each went; in between, every 50 ms while
/// a sidecar is starting, it lets the instance ask the starting sidecars again.
///
/// It also holds the desired state (`WorkloadStore`) and the read model the API serves
/// (`pods`, `deployments`). Pods are found again by their labels after an agent
/// restart: they keep running.
final class Reconciler: @unchecked Sendable {
    struct Settings: Sendable {
        var podmanSocket: String
        var sidecarImage: String
        var proxyBinary: String
        var runDirectory: String
        var policies: String
        var certificateTTL: Double
        var node: String
        /// This agent's node ID: its pods carry it, and it manages no others (two agents
        /// sharing one podman must not remove each other's pods).
        var agentID: String
        /// Pods that publish a service are published on a host port of `host` from
        /// `ports`, recorded in the file `table`; nil: they publish their pod address.
        var published: (host: String, ports: ClosedRange<UInt16>, table: String)?
        var sidecarUser: UInt32 = KubernetesObject.sidecarID
    }

    private let settings: Settings
    private let store: WorkloadStore
    /// podman, files and processes: where directives are carried out.
    let runtime: PodRuntime
    /// podman's API (also read by the API's log streaming).
    var podman: PodmanClient { runtime.podman }
    private let logger: Logger
    private let clock: @Sendable () -> Date

    /// Shared with API readers.
    private struct Shared {
        var workloads: [String: KubernetesObject] = [:]
        var pods: [String: PodStatus] = [:]
        var stopping = false
    }
    private let shared = NIOLockedValueBox(Shared())
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchGroup()

    /// The decisions (the loop's thread only).
    private var lifecycle: PodLifecycle
    /// The StatefulSets' Raft groups (nil: the agent hosts none, as in tests that run
    /// pods only).
    let raftGroups: RaftGroups?
    /// Set when the stored objects did not all load: no group is removed then.
    private let keepsRaftGroups: Bool

    init(
        settings: Settings,
        store: WorkloadStore,
        nodeCA: CertificateAuthority,
        podSockets: PodSockets?,
        raftGroups: RaftGroups? = nil,
        logger: Logger,
        clock: @escaping @Sendable () -> Date = Date.init
    ) throws {
        self.raftGroups = raftGroups
        self.settings = settings
        self.store = store
        self.runtime = try PodRuntime(settings: settings, nodeCA: nodeCA, podSockets: podSockets, logger: logger)
        self.logger = logger
        self.clock = clock
        self.lifecycle = PodLifecycle(
            settings: .init(certificateTTL: settings.certificateTTL, caNotAfter: nodeCA.certificate.notAfter)
        )
        let (workloads, errors) = try store.load()
        for error in errors { logger.error("stored object unreadable; skipped", metadata: ["error": "\(error)"]) }
        // An unreadable StatefulSet must not read as a deleted one: its group's data stays.
        keepsRaftGroups = !errors.isEmpty
        shared.withLockedValue { $0.workloads = workloads }
    }

    func start() {
        finished.enter()
        let thread = Thread { [self] in
            run()
            finished.leave()
        }
        thread.name = "beemesh-reconciler"
        thread.start()
    }

    /// Stops the loop once its current step is done (pods keep running: they are the
    /// node's, not the agent's), waiting at most `timeout` without blocking a thread.
    func stop(timeout: TimeInterval = 30) async {
        shared.withLockedValue { $0.stopping = true }
        wake.signal()
        let resumed = NIOLockedValueBox(false)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resume: @Sendable () -> Void = {
                guard
                    !resumed.withLockedValue({ done in
                        defer { done = true }; return done
                    })
                else { return }
                continuation.resume()
            }
            finished.notify(queue: .global(), execute: resume)
            DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: resume)
        }
    }

    // MARK: desired state

    /// Stores `workloads` in one atomic step (all or nothing: they were all parsed and
    /// checked before) and reconciles at once. One line per object, as kubectl prints
    /// them. Refused as a whole when the result would have two objects ask for one pod
    /// name (`Pod sec-c-0` beside `Deployment sec-c`).
    func apply(_ workloads: [KubernetesObject]) throws -> [String] {
        let lines = try shared.withLockedValue { shared in
            var next = shared.workloads
            var lines: [String] = []
            for var workload in workloads {
                let previous = shared.workloads[workload.key]
                workload.created = previous?.created ?? Date()
                let label = "\(workload.kind.rawValue.lowercased())/\(workload.name)"
                if previous == workload {
                    lines.append("\(label) unchanged")
                    continue
                }
                next[workload.key] = workload
                lines.append("\(label) \(previous == nil ? "created" : "configured")")
            }
            if let conflict = Self.podNameConflict(in: next) { throw conflict }
            if next != shared.workloads {
                try store.commit(next)
                shared.workloads = next
            }
            return lines
        }
        wake.signal()
        return lines
    }

    /// Removes the objects with these keys, in one atomic step; their pods go at the
    /// next pass (at once).
    func delete(_ keys: [String]) throws -> [String] {
        let lines = try shared.withLockedValue { shared in
            var next = shared.workloads
            var lines: [String] = []
            for key in keys {
                guard let workload = next.removeValue(forKey: key) else {
                    let parts = key.split(separator: "/")
                    lines.append("\(parts[0].lowercased())/\(parts.last ?? "") not found")
                    continue
                }
                lines.append("\(workload.kind.rawValue.lowercased())/\(workload.name) deleted")
            }
            if next != shared.workloads {
                try store.commit(next)
                shared.workloads = next
            }
            return lines
        }
        wake.signal()
        return lines
    }

    /// Two objects whose pods would share a name: refused at apply, since each would
    /// replace the other's pod forever.
    static func podNameConflict(in workloads: [String: KubernetesObject]) -> ApplyConflict? {
        var owners: [String: String] = [:]
        for pod in DesiredPod.plan(workloads.values) {
            if let owner = owners[pod.podmanName], owner != pod.owner {
                return ApplyConflict(
                    reason: "\(owner) and \(pod.owner) would both run pod \(pod.name) in namespace \(pod.namespace)"
                )
            }
            owners[pod.podmanName] = pod.owner
        }
        return nil
    }

    /// The stored object under `key` (`Kind/namespace/name`).
    func workload(_ key: String) -> KubernetesObject? {
        shared.withLockedValue { $0.workloads[key] }
    }

    var pods: [PodStatus] {
        shared.withLockedValue { $0.pods.values.sorted { ($0.namespace, $0.name) < ($1.namespace, $1.name) } }
    }

    var deployments: [DeploymentStatus] {
        shared.withLockedValue { shared in
            shared.workloads.values.filter { $0.kind == .deployment || $0.kind == .statefulSet }
                .sorted { $0.key < $1.key }
                .map { workload in
                    let ready = shared.pods.values.filter { $0.owner == workload.key && $0.phase == "Running" }.count
                    return DeploymentStatus(
                        kind: workload.kind.rawValue,
                        name: workload.name,
                        namespace: workload.namespace,
                        replicas: workload.replicas,
                        ready: ready,
                        created: workload.created ?? Date()
                    )
                }
        }
    }

    /// The admin sockets of the sidecars of running pods, by `namespace/name`.
    var sidecarSockets: [(pod: String, socket: String)] {
        pods.filter(\.injected).map { pod -> (pod: String, socket: String) in
            let directory = DesiredPod.directoryName(podmanName: "\(pod.name).\(pod.namespace)")
            return ("\(pod.namespace)/\(pod.name)", "\(settings.runDirectory)/\(directory)/run/proxy.sock")
        }
    }

    /// podman's name of a container of a pod, for logs.
    func containerName(pod: String, namespace: String, container: String?) -> String? {
        guard let status = shared.withLockedValue({ $0.pods["\(pod).\(namespace)"] }) else { return nil }
        let name = container ?? status.containers.first { !$0.sidecar }?.name ?? DesiredPod.sidecarName
        guard status.containers.contains(where: { $0.name == name }) else { return nil }
        return "\(pod).\(namespace).\(name)"
    }

    // MARK: the loop

    private func run() {
        runtime.ensurePodmanService()
        var nextPass = clock()
        while !shared.withLockedValue({ $0.stopping }) {
            if clock() >= nextPass || lifecycle.retryDue(now: clock()) {
                reconcileOnce()
                nextPass = clock() + 1
            } else {
                carry(lifecycle.tick(now: clock()))
            }
            let wakeAt = min(nextPass, lifecycle.nextWake(now: clock()))
            if wake.wait(timeout: .now() + max(0, wakeAt.timeIntervalSince(clock()))) == .success {
                nextPass = clock()  // an apply or a delete: a full pass at once
            }
        }
        runtime.stopPodmanService()
    }

    /// One full pass: observe, decide, carry out, publish the pods' statuses.
    private func reconcileOnce() {
        let workloads = shared.withLockedValue { $0.workloads }
        var desired = DesiredPod.plan(workloads.values, node: settings.node)
        let existing: [String: (digest: String, created: Date?)]
        do {
            existing = try runtime.existingPods()
        } catch {
            logger.warning("cannot list pods", metadata: ["error": "\(error)"])
            return
        }
        if let raftGroups {
            desired = Self.claimed(
                desired,
                workloads: workloads.values,
                existing: existing,
                groups: raftGroups,
                node: settings.node,
                removing: !keepsRaftGroups
            )
        }
        runtime.keepHostPorts(for: Set(desired.filter(\.publishes).map(\.podmanName)))
        var observed: [String: PodLifecycle.Observation] = [:]
        for pod in desired where existing[pod.podmanName]?.digest == pod.specDigest {
            observed[pod.podmanName] = runtime.observe(pod)
        }
        let directives = lifecycle.pass(
            desired: desired,
            existing: existing.mapValues(\.digest),
            observed: observed,
            now: clock()
        )
        // Removals first, in parallel: each waits for its containers to stop.
        let removals = directives.compactMap { directive -> (pod: String, reason: String)? in
            guard case .remove(let pod, let reason) = directive else { return nil }
            return (pod, reason)
        }
        if !removals.isEmpty {
            shared.withLockedValue { shared in
                for removal in removals { shared.pods[removal.pod]?.phase = PodLifecycle.Phase.terminating.name }
            }
            DispatchQueue.concurrentPerform(iterations: removals.count) { index in
                runtime.teardown(removals[index].pod, reason: removals[index].reason)
            }
        }
        carry(directives.filter { if case .remove = $0 { false } else { true } })
        let now = clock()
        var statuses: [String: PodStatus] = [:]
        for pod in desired {
            let running = existing[pod.podmanName]?.digest == pod.specDigest
            statuses[pod.podmanName] = status(
                of: pod,
                created: (running ? existing[pod.podmanName]?.created : nil) ?? now,
                observation: observed[pod.podmanName]
            )
        }
        shared.withLockedValue { $0.pods = statuses }
        if let raftGroups {
            raftGroups.report(
                ready: Self.readiness(
                    statuses.values,
                    of: desired,
                    existing: existing.keys,
                    workloads: workloads.values,
                    node: settings.node
                )
            )
        }
    }

    /// The StatefulSets this node runs (`namespace/name` → replicas).
    static func statefulSets(_ workloads: some Collection<KubernetesObject>, node: String) -> [String: Int] {
        var sets: [String: Int] = [:]
        for workload in workloads where workload.kind == .statefulSet {
            if let named = workload.template?.nodeName, named != node { continue }
            sets["\(workload.namespace)/\(workload.name)"] = workload.replicas
        }
        return sets
    }

    /// `desired` without the StatefulSet pods this node must not run: those whose
    /// ordinal another node holds in the group, and those not yet claimed that do
    /// not run already (an ordinal never runs on two nodes at once).
    static func claimed(
        _ desired: [DesiredPod],
        workloads: some Collection<KubernetesObject>,
        existing: [String: (digest: String, created: Date?)],
        groups: RaftGroups,
        node: String,
        removing: Bool
    ) -> [DesiredPod] {
        let holders = groups.ensure(statefulSets(workloads, node: node), removing: removing, existing: existing.keys)
        return desired.filter { pod in
            guard let (group, ordinal) = pod.statefulOrdinal else { return true }
            switch holders[group]?[ordinal] ?? .unknown {
            case .here: return true
            case .elsewhere: return false
            case .unknown: return existing[pod.podmanName] != nil
            }
        }
    }

    /// Which ordinals of each StatefulSet this node runs are ready (running, every
    /// container up); a pod that still exists but is no longer desired (scaled down,
    /// being removed) is named as not ready. Every group this node hosts is named, so
    /// that the claims of ordinals whose pods are gone are released.
    static func readiness(
        _ statuses: some Collection<PodStatus>,
        of desired: [DesiredPod],
        existing: some Collection<String>,
        workloads: some Collection<KubernetesObject>,
        node: String
    ) -> [String: [Int: Bool]] {
        var ready = statefulSets(workloads, node: node).mapValues { _ in [Int: Bool]() }
        let byName = Dictionary(
            statuses.map { ("\($0.namespace)/\($0.name)", $0) },
            uniquingKeysWith: { first, _ in first }
        )
        for pod in desired {
            guard let (group, ordinal) = pod.statefulOrdinal else { continue }
            let status = byName["\(pod.namespace)/\(pod.name)"]
            ready[group, default: [:]][ordinal] =
                status?.phase == "Running" && status?.containers.allSatisfy { $0.state == "running" } == true
        }
        // podman's names are NAME-N.NAMESPACE; a pod name belongs to one object only.
        for podmanName in existing {
            guard let dot = podmanName.lastIndex(of: "."), let dash = podmanName[..<dot].lastIndex(of: "-"),
                let ordinal = Int(podmanName[podmanName.index(after: dash)..<dot]),
                String(ordinal) == podmanName[podmanName.index(after: dash)..<dot]
            else { continue }
            let group = "\(podmanName[podmanName.index(after: dot)...])/\(podmanName[..<dash])"
            if ready[group] != nil, ready[group]?[ordinal] == nil { ready[group]?[ordinal] = false }
        }
        return ready
    }

    /// Carries out directives, and those that the events they report produce.
    private func carry(_ directives: [PodLifecycle.Directive]) {
        var queue = directives[...]
        while let directive = queue.popFirst() {
            queue += execute(directive)
        }
    }

    private func execute(_ directive: PodLifecycle.Directive) -> [PodLifecycle.Directive] {
        switch directive {
        case .remove(let pod, let reason):
            runtime.teardown(pod, reason: reason)
        case .discard(let pod):
            runtime.discard(pod)
        case .create(let pod):
            do {
                try runtime.create(pod)
                return lifecycle.created(pod.podmanName, now: clock())
            } catch {
                return failed(pod, error)
            }
        case .startApps(let pod):
            do {
                try runtime.startApps(pod)
                lifecycle.appsStarted(pod.podmanName)
            } catch {
                return failed(pod, error)
            }
        case .probeSidecar(let pod):
            return lifecycle.sidecarProbed(pod.podmanName, ready: runtime.sidecarReady(pod), now: clock())
        case .restartContainer(let pod, let container, let restarts):
            if !runtime.restart(pod: pod, container: container, restarts: restarts) { lifecycle.restartFailed(pod) }
        case .renewIdentity(let pod):
            runtime.renewIdentity(pod)
        case .openAgentSocket(let pod):
            runtime.openAgentSocket(pod)
        }
        return []
    }

    private func failed(_ pod: DesiredPod, _ error: any Error) -> [PodLifecycle.Directive] {
        let directives = lifecycle.failed(pod.podmanName, reason: "\(error)", now: clock())
        var retry = "?"
        if case .backingOff(let retryAt) = lifecycle.view(of: pod.podmanName)?.phase {
            retry = "\(retryAt.timeIntervalSince(clock()).rounded())"
        }
        logger.error(
            "cannot start pod; retrying",
            metadata: ["pod": "\(pod.namespace)/\(pod.name)", "error": "\(error)", "retry_in_s": "\(retry)"]
        )
        return directives
    }

    private func status(of pod: DesiredPod, created: Date, observation: PodLifecycle.Observation?) -> PodStatus {
        let view = lifecycle.view(of: pod.podmanName)
        let identity =
            pod.injected
            ? (try? SpiffeID(
                trustDomain: runtime.trustDomain,
                namespace: pod.namespace,
                serviceAccount: pod.template.serviceAccount
            ))?.description
            : nil
        var containers: [PodStatus.ContainerStatus] = []
        if let observation, view.map({ if case .awaitingSidecar = $0.phase { false } else { true } }) ?? true {
            for name in (pod.injected ? [DesiredPod.sidecarName] : []) + pod.template.containers.map(\.name) {
                let state = observation.containers[name] ?? .missing
                var exitCode: Int?
                if case .stopped(_, let code) = state { exitCode = code }
                containers.append(
                    PodStatus.ContainerStatus(
                        name: name,
                        image: name == DesiredPod.sidecarName
                            ? settings.sidecarImage : pod.template.containers.first { $0.name == name }?.image ?? "",
                        state: state.name,
                        restarts: view?.restarts[name] ?? 0,
                        exitCode: exitCode,
                        sidecar: name == DesiredPod.sidecarName
                    )
                )
            }
        }
        return PodStatus(
            name: pod.name,
            namespace: pod.namespace,
            phase: (view?.phase ?? .pending).name,
            owner: pod.owner,
            ip: observation?.ip,
            node: settings.node,
            identity: identity,
            injected: pod.injected,
            created: created,
            containers: containers,
            message: view?.message
        )
    }
}

/// An apply that would leave the desired state contradicting itself.
struct ApplyConflict: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}
