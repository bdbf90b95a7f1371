import Foundation
import MeshAPI

/// What the reconciler decides, as a pure instance (`KademliaNode`'s shape): the pods
/// the stored objects ask for and what podman reports go in with the time, and what to
/// do comes out as `Directive`s, which the shell (`Reconciler`) carries out against
/// podman, reporting back how each went. It never calls podman, reads a clock or
/// sleeps, so every rule below is tested event by event (`PodLifecycleTests`).
///
/// | event                        | directives                                             |
/// |------------------------------|--------------------------------------------------------|
/// | `pass(desired:observed:now:)` | `remove` pods no object asks for (or whose objects changed, or whose network namespace is gone), `create` asked-for pods that do not run and are not backing off, `restartContainer` exited containers whose back-off is over, `renewIdentity` at half-life, `openAgentSocket` for pods found running after a restart |
/// | `created(_:now:)`            | `startApps` for a pod without a sidecar; nothing for one with a sidecar (it waits for `/ready`) |
/// | `tick(now:)`                 | `probeSidecar` for each pod waiting for its sidecar; `discard` for one that waited longer than `sidecarReadyTimeout` |
/// | `sidecarProbed(_:ready:now:)` | `startApps` once the sidecar is ready                 |
/// | `appsStarted(_:)`            | none: the pod runs                                      |
/// | `restartFailed(_:)`          | none: the pod is not running after all                  |
/// | `failed(_:reason:now:)`      | `discard` (what was made is removed), and a retry after the back-off |
///
/// A pod moves through `Phase`s:
///
/// ```
/// pending ─create→ awaitingSidecar ─ready→ (startApps) → running ⇄ crashLoopBackOff
///    ↑                  │ timeout / failure                   │ a container exits:
///    └── backingOff ←───┘                                     └ restarted after its back-off
/// ```
///
/// One pod's trouble never holds up another: creating, probing and back-off are per pod,
/// and nothing waits for a sidecar inside a pass.
struct PodLifecycle {
    struct Settings: Sendable {
        /// How long a sidecar may take to answer `/ready` before its pod is failed.
        var sidecarReadyTimeout: TimeInterval = 15
        /// The lifetime of a workload certificate: one is renewed at half of it.
        var certificateTTL: TimeInterval
        /// The node CA's expiry, which caps every certificate it issues: renewing is
        /// pointless once a new one would end no later than the current one.
        var caNotAfter: Date
    }

    enum Phase: Equatable, Sendable {
        /// Asked for and not running: about to be created.
        case pending
        /// Created with its sidecar, which has not answered `/ready` yet; the app
        /// containers start once it does.
        case awaitingSidecar(since: Date)
        /// Could not be started; created again at `retryAt`.
        case backingOff(retryAt: Date)
        case running
        /// A container exited and waits for its restart.
        case crashLoopBackOff
        /// No longer asked for (or its objects changed): being removed. The shell shows
        /// it while it carries out `remove`; the instance has forgotten the pod by then.
        case terminating

        /// The phase as the API and `beectl get pods` show it.
        var name: String {
            switch self {
            case .running: "Running"
            case .crashLoopBackOff: "CrashLoopBackOff"
            case .terminating: "Terminating"
            case .pending, .awaitingSidecar, .backingOff: "Pending"
            }
        }
    }

    /// What podman reports about one pod that runs with the asked-for spec.
    struct Observation: Equatable, Sendable {
        var containers: [String: ContainerState]
        /// The pod's address on the node's container network, for its status.
        var ip: String?
        /// Whether the pod's network namespace is the one its capture was installed in
        /// (its infra container runs in it). When not, the pod is rebuilt, never
        /// restarted container by container into a namespace without capture.
        var networkIntact = true
        /// The pod's workload certificate's expiry; nil without a sidecar or a readable one.
        var identityExpiry: Date?
        /// Whether the agent serves the pod's own agent socket (it does not after an
        /// agent restart, until told to open it).
        var agentSocketOpen: Bool
    }

    enum ContainerState: Equatable, Sendable {
        case running
        /// Exited, stopped, or created and never started: to be (re)started.
        case stopped(status: String, exitCode: Int)
        /// podman has no such container.
        case missing
        /// Any other state podman reports (paused, removing), or none it could give.
        case other(String)

        var name: String {
            switch self {
            case .running: "running"
            case .stopped(let status, _): status
            case .missing: "missing"
            case .other(let status): status
            }
        }
    }

    enum Directive: Equatable, Sendable {
        /// Stop the pod (app containers, then the sidecar, which drains), remove it and
        /// its directory.
        case remove(pod: String, reason: String)
        /// Remove what a failed attempt left (the pod, its agent socket).
        case discard(pod: String)
        /// Create the pod, its identity, configuration and capture, and its sidecar;
        /// report `created` or `failed`.
        case create(DesiredPod)
        /// Create and start the app containers podman does not have; report
        /// `appsStarted` or `failed`.
        case startApps(DesiredPod)
        /// Ask the pod's sidecar for `/ready`; report `sidecarProbed`.
        case probeSidecar(DesiredPod)
        case restartContainer(pod: String, container: String, restarts: Int)
        case renewIdentity(DesiredPod)
        case openAgentSocket(DesiredPod)
    }

    /// A pod as the API shows it: its phase, why it is not running, and each
    /// container's restarts.
    struct PodView: Equatable, Sendable {
        var phase: Phase
        var message: String?
        var restarts: [String: Int]
    }

    let settings: Settings

    private struct Pod {
        var desired: DesiredPod
        var phase: Phase = .pending
        /// Failed attempts in a row: the back-off of the next.
        var failures = 0
        var message: String?
        var containers: [String: ContainerHistory] = [:]
    }

    private struct ContainerHistory {
        var restarts = 0
        /// Not restarted again before this; nil: at once.
        var retryAt: Date?
    }

    private var pods: [String: Pod] = [:]

    init(settings: Settings) {
        self.settings = settings
    }

    /// The delay before the attempt after `failures` failures in a row: 1 s, doubling,
    /// at most 30 s. The same for pods and for containers.
    static func backoff(failures: Int) -> TimeInterval {
        min(30, pow(2, Double(max(0, failures - 1))))
    }

    // MARK: events

    /// A full pass: `desired` pods against the pods podman runs for this agent
    /// (`existing`: name to spec digest) and what it reports of those that run with the
    /// right spec (`observed`).
    mutating func pass(
        desired: [DesiredPod],
        existing: [String: String],
        observed: [String: Observation],
        now: Date
    ) -> [Directive] {
        var directives: [Directive] = []
        let wanted = Dictionary(desired.map { ($0.podmanName, $0) }, uniquingKeysWith: { first, _ in first })
        for (name, digest) in existing.sorted(by: { $0.key < $1.key }) {
            guard let pod = wanted[name] else {
                directives.append(.remove(pod: name, reason: "no longer asked for"))
                pods[name] = nil
                continue
            }
            if digest != pod.specDigest {
                directives.append(.remove(pod: name, reason: "its objects changed"))
                pods[name] = nil
            }
        }
        pods = pods.filter { wanted[$0.key] != nil }
        for pod in desired {
            let name = pod.podmanName
            var state = pods[name] ?? Pod(desired: pod)
            state.desired = pod
            defer { pods[name] = state }
            let runs = existing[name] == pod.specDigest
            switch state.phase {
            case .awaitingSidecar:
                continue
            case .backingOff(let retryAt) where retryAt > now:
                continue
            case .pending, .backingOff, .terminating, .running, .crashLoopBackOff:
                break
            }
            guard runs, let observation = observed[name] else {
                if !runs {
                    state.phase = .pending
                    directives.append(.create(pod))
                }
                continue
            }
            if pod.injected, !observation.networkIntact {
                let reason = "its network namespace is gone (the infra container stopped): rebuilt"
                directives.append(.remove(pod: name, reason: reason))
                // Rebuilt after the back-off: a pod whose infra keeps dying is not
                // torn down and made again every pass.
                state.failures += 1
                state.message = reason
                state.phase = .backingOff(retryAt: now + Self.backoff(failures: state.failures))
                continue
            }
            if pod.injected, !observation.agentSocketOpen { directives.append(.openAgentSocket(pod)) }
            directives += check(&state, observation, now: now)
        }
        return directives
    }

    /// The pod was created (and its sidecar started, if it has one).
    mutating func created(_ name: String, now: Date) -> [Directive] {
        guard var state = pods[name] else { return [] }
        defer { pods[name] = state }
        guard state.desired.injected else { return [.startApps(state.desired)] }
        state.phase = .awaitingSidecar(since: now)
        return []
    }

    /// The pods waiting for their sidecars are asked again; those that waited too long
    /// are failed.
    mutating func tick(now: Date) -> [Directive] {
        var directives: [Directive] = []
        for (name, state) in pods.sorted(by: { $0.key < $1.key }) {
            guard case .awaitingSidecar(let since) = state.phase else { continue }
            if now.timeIntervalSince(since) > settings.sidecarReadyTimeout {
                let seconds = Int(settings.sidecarReadyTimeout)
                directives += failed(name, reason: "the sidecar did not become ready within \(seconds) s", now: now)
            } else {
                directives.append(.probeSidecar(state.desired))
            }
        }
        return directives
    }

    mutating func sidecarProbed(_ name: String, ready: Bool, now: Date) -> [Directive] {
        guard ready, let state = pods[name], case .awaitingSidecar = state.phase else { return [] }
        pods[name]?.phase = .pending
        return [.startApps(state.desired)]
    }

    /// The app containers run: the pod's failures are forgotten.
    mutating func appsStarted(_ name: String) {
        guard pods[name] != nil else { return }
        pods[name]?.phase = .running
        pods[name]?.failures = 0
        pods[name]?.message = nil
    }

    /// An attempt failed: what it made is removed, and the pod is created again after
    /// the back-off, with `reason` in its status meanwhile.
    mutating func failed(_ name: String, reason: String, now: Date) -> [Directive] {
        guard var state = pods[name] else { return [] }
        state.failures += 1
        state.message = reason
        state.phase = .backingOff(retryAt: now + Self.backoff(failures: state.failures))
        pods[name] = state
        return [.discard(pod: name)]
    }

    // MARK: reading

    func view(of name: String) -> PodView? {
        pods[name].map { state in
            PodView(phase: state.phase, message: state.message, restarts: state.containers.mapValues(\.restarts))
        }
    }

    /// When the shell should call `tick` or `pass` next: soon while a sidecar is awaited,
    /// at the end of the earliest back-off still running, and otherwise after `idle`.
    func nextWake(now: Date, idle: TimeInterval = 1, probeInterval: TimeInterval = 0.05) -> Date {
        var next = now + idle
        for state in pods.values {
            switch state.phase {
            case .awaitingSidecar: next = min(next, now + probeInterval)
            case .backingOff(let retryAt) where retryAt > now: next = min(next, retryAt)
            case .backingOff, .pending, .running, .crashLoopBackOff, .terminating: continue
            }
        }
        return next
    }

    /// Whether a back-off has ended: a pass creates the pod again (`tick` does not).
    func retryDue(now: Date) -> Bool {
        pods.values.contains { state in
            if case .backingOff(let retryAt) = state.phase { retryAt <= now } else { false }
        }
    }

    /// A restart the last pass asked for did not happen: the pod is not running.
    mutating func restartFailed(_ name: String) {
        if pods[name]?.phase == .running { pods[name]?.phase = .pending }
    }

    // MARK: running pods

    /// A running pod's containers: exited ones restarted after their back-off, missing
    /// app containers awaited from the sidecar (an agent that stopped while a sidecar
    /// started leaves none), the identity renewed at half-life.
    private func check(_ state: inout Pod, _ observation: Observation, now: Date) -> [Directive] {
        let pod = state.desired
        var directives: [Directive] = []
        var waiting = false
        var allRunning = true
        var appMissing = false
        for name in (pod.injected ? [DesiredPod.sidecarName] : []) + pod.template.containers.map(\.name) {
            var history = state.containers[name] ?? ContainerHistory()
            switch observation.containers[name] ?? .missing {
            case .stopped:
                if let retryAt = history.retryAt, retryAt > now {
                    waiting = true
                } else {
                    // Counted as running from here: if the restart fails, the next pass
                    // finds it stopped again.
                    history.restarts += 1
                    history.retryAt = now + Self.backoff(failures: history.restarts)
                    directives.append(
                        .restartContainer(pod: pod.podmanName, container: name, restarts: history.restarts)
                    )
                }
            case .running:
                // Ran a minute since its last restart: the next exit starts the back-off afresh.
                if let retryAt = history.retryAt, retryAt < now - 60 { history.retryAt = nil }
            case .missing:
                if name != DesiredPod.sidecarName { appMissing = true }
                allRunning = false
            case .other:
                allRunning = false
            }
            state.containers[name] = history
        }
        if pod.injected, appMissing {
            state.phase = .awaitingSidecar(since: now)
            return directives
        }
        if pod.injected, let expiry = observation.identityExpiry,
            expiry.timeIntervalSince(now) < settings.certificateTTL / 2,
            settings.caNotAfter.timeIntervalSince(expiry) > 1
        {
            directives.append(.renewIdentity(pod))
        }
        state.phase = waiting ? .crashLoopBackOff : allRunning ? .running : .pending
        return directives
    }
}
