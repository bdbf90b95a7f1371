import Foundation
import Logging
import MeshAPI
import MeshIdentity
import NIOConcurrencyHelpers

/// Keeps podman running what the stored objects ask for, on a thread of its own
/// (podman's API is called blocking): every second, and at once after an apply or a
/// delete.
///
/// For each pod it creates, in this order: the pod (its infra container holds the
/// network namespace), the pod's identity (an X.509-SVID from the node CA, in a
/// per-pod directory on tmpfs, replaced atomically and renewed at half-life), the
/// capture rules (installed from the host by `beemesh-proxy capture install --netns`,
/// so no container holds NET_ADMIN), the sidecar (uid/gid 1337, the policies mounted
/// read-only), and only once the sidecar answers `/ready`, the app containers. A
/// container that exits is restarted with exponential backoff (1 s doubling to 30 s);
/// a pod whose objects changed is replaced; a pod no object asks for is removed, app
/// containers first and the sidecar last, so that it drains their connections.
///
/// Pods are found again by their labels after an agent restart: they keep running.
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
        var sidecarUser: UInt32 = Workload.sidecarID
    }

    static let managedLabel = "beemesh.io/agent"
    static let specLabel = "beemesh.io/spec"
    static let ownerLabel = "beemesh.io/owner"

    private let settings: Settings
    private let store: WorkloadStore
    /// podman's API (also read by the API's log streaming).
    let podman: PodmanClient
    private let nodeCA: CertificateAuthority
    /// Each injected pod's own agent socket (nil: sidecars get no agent, and publish
    /// nothing).
    private let podSockets: PodSockets?
    private let logger: Logger

    /// Shared with API readers.
    private struct Shared {
        var workloads: [String: Workload] = [:]
        var pods: [String: PodStatus] = [:]
        var stopping = false
    }
    private let shared = NIOLockedValueBox(Shared())
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    // Reconciler thread only.
    private struct ContainerHistory {
        var restarts = 0
        var retryAt: Date?
    }
    private var histories: [String: ContainerHistory] = [:]
    private var podRetryAt: [String: (at: Date, failures: Int)] = [:]
    private var podMessages: [String: String] = [:]
    private var podmanService: Process?
    /// Pods whose sidecar was started and does not answer `/ready` yet: their app
    /// containers start once it does (`advanceAwaitingSidecars`).
    private var awaitingSidecar: [String: (pod: DesiredPod, since: Date)] = [:]
    /// How long a sidecar may take to become ready before its pod is failed and retried.
    static let sidecarReadyTimeout: TimeInterval = 15

    init(
        settings: Settings,
        store: WorkloadStore,
        nodeCA: CertificateAuthority,
        podSockets: PodSockets?,
        logger: Logger
    ) throws {
        self.settings = settings
        self.store = store
        self.podman = PodmanClient(socket: settings.podmanSocket)
        self.nodeCA = nodeCA
        self.podSockets = podSockets
        self.logger = logger
        let (workloads, errors) = try store.load()
        for error in errors { logger.error("stored object unreadable; skipped", metadata: ["error": "\(error)"]) }
        shared.withLockedValue { $0.workloads = workloads }
    }

    func start() {
        let thread = Thread { [self] in run() }
        thread.name = "beemesh-reconciler"
        thread.start()
    }

    /// Stops the loop (pods keep running: they are the node's, not the agent's).
    func stop() {
        shared.withLockedValue { $0.stopping = true }
        wake.signal()
        _ = finished.wait(timeout: .now() + 30)
    }

    // MARK: desired state

    /// Stores `workloads` in one atomic step (all or nothing: they were all parsed and
    /// checked before) and reconciles at once. One line per object, as kubectl prints
    /// them. Refused as a whole when the result would have two objects ask for one pod
    /// name (`Pod sec-c-0` beside `Deployment sec-c`).
    func apply(_ workloads: [Workload]) throws -> [String] {
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
    static func podNameConflict(in workloads: [String: Workload]) -> ApplyConflict? {
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
    func workload(_ key: String) -> Workload? {
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

    /// A full pass every second (and at once after an apply or a delete); in between,
    /// every 50 ms, the pods whose sidecars are starting are looked at, so that one pod's
    /// slow or failing sidecar never holds up another pod.
    private func run() {
        defer { finished.signal() }
        ensurePodmanService()
        while !shared.withLockedValue({ $0.stopping }) {
            reconcileOnce()
            let pass = DispatchTime.now() + 1
            var woken = false
            while !awaitingSidecar.isEmpty, DispatchTime.now() < pass {
                advanceAwaitingSidecars()
                if wake.wait(timeout: .now() + 0.05) == .success {
                    woken = true  // an apply or a delete: a full pass at once
                    break
                }
            }
            if !woken, awaitingSidecar.isEmpty { _ = wake.wait(timeout: pass) }
        }
        if let podmanService {
            podmanService.terminate()
            unlink(podmanPIDFile)
        }
    }

    /// Where the PID of the podman service this agent started is kept, so that whoever
    /// cleans up after an agent that was killed (a test, the demo) stops that process
    /// by its PID, never by a name that another run's process shares.
    var podmanPIDFile: String { settings.podmanSocket + ".pid" }

    /// Starts `podman system service` on the configured socket when nothing answers there.
    private func ensurePodmanService() {
        guard !podman.ping() else { return }
        logger.info("podman service not answering; starting it", metadata: ["socket": "\(settings.podmanSocket)"])
        try? FileManager.default.createDirectory(
            atPath: (settings.podmanSocket as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["podman", "system", "service", "--time=0", "unix://\(settings.podmanSocket)"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
            podmanService = process
            try? PEMFile.write(podmanPIDFile, "\(process.processIdentifier)\n", mode: 0o644)
        } catch {
            logger.error("cannot start podman system service", metadata: ["error": "\(error)"])
            return
        }
        for _ in 0..<100 where !podman.ping() { Thread.sleep(forTimeInterval: 0.1) }
    }

    func reconcileOnce() {
        let workloads = shared.withLockedValue { $0.workloads }
        let desired = DesiredPod.plan(workloads.values)
        let summaries: [PodmanClient.PodSummary]
        do {
            summaries = try podman.listPods(label: "\(Self.managedLabel)=\(settings.agentID)")
        } catch {
            logger.warning("cannot list pods", metadata: ["error": "\(error)"])
            return
        }
        let existing = Dictionary(summaries.map { ($0.Name, $0) }, uniquingKeysWith: { first, _ in first })
        let wanted = Dictionary(desired.map { ($0.podmanName, $0) }, uniquingKeysWith: { first, _ in first })
        let unwanted = existing.values.filter { summary in
            guard let pod = wanted[summary.Name] else { return true }
            return summary.Labels?[Self.specLabel] != pod.specDigest
        }
        if !unwanted.isEmpty {
            shared.withLockedValue { shared in
                for summary in unwanted { shared.pods[summary.Name]?.phase = "Terminating" }
            }
            // In parallel: each waits for its containers to stop.
            DispatchQueue.concurrentPerform(iterations: unwanted.count) { index in
                let name = unwanted[index].Name
                teardown(name, reason: wanted[name] == nil ? "no longer asked for" : "its objects changed")
            }
            for summary in unwanted { forget(summary.Name) }
        }
        var statuses: [String: PodStatus] = [:]
        for pod in desired {
            let summary = existing[pod.podmanName]
            let running = summary?.Labels?[Self.specLabel] == pod.specDigest
            let since = (running ? summary?.createdDate : nil) ?? Date()
            if awaitingSidecar[pod.podmanName] != nil {
                statuses[pod.podmanName] = status(of: pod, created: since, phase: "Pending")
                continue
            }
            if !running {
                if let retry = podRetryAt[pod.podmanName], retry.at > Date() {
                    statuses[pod.podmanName] = status(of: pod, created: since, phase: "Pending")
                    continue
                }
                create(pod)
            } else if pod.injected, podSockets?.pods.contains(pod.podmanName) == false {
                openPodSocket(pod)  // a pod that ran before the agent restarted
            }
            statuses[pod.podmanName] = check(pod, created: since)
        }
        shared.withLockedValue { $0.pods = statuses }
    }

    // MARK: creating

    private func create(_ pod: DesiredPod) {
        let directory = "\(settings.runDirectory)/\(pod.directoryName)"
        do {
            try? podman.removePod(pod.podmanName)  // a half-made one from an earlier attempt
            try prepareDirectories(directory)
            if pod.injected { try issueIdentity(for: pod, into: directory + "/identity") }
            try podman.createPod(
                PodmanClient.PodSpec(
                    name: pod.podmanName,
                    labels: [
                        Self.managedLabel: settings.agentID, Self.specLabel: pod.specDigest, Self.ownerLabel: pod.owner,
                        "beemesh.io/namespace": pod.namespace, "beemesh.io/name": pod.name,
                    ],
                    hostname: pod.name
                )
            )
            try podman.startPod(pod.podmanName)
            if pod.injected {
                let infra = try infraContainer(of: pod)
                try PEMFile.write(
                    directory + "/config/proxy.yaml",
                    try pod.proxyConfiguration(
                        podIP: infra.ip,
                        agentSocket: podSockets.map { _ in Self.agentSocketInPod }
                    ),
                    mode: 0o644
                )
                if let podSockets {
                    try podSockets.open(
                        try pod.binding(podIP: infra.ip, trustDomain: nodeCA.trustDomain),
                        at: directory + "/agent/agent.sock",
                        key: pod.podmanName
                    )
                }
                try installCapture(pod, netns: infra.netns)
                try podman.createContainer(sidecarSpec(pod, directory: directory))
                try podman.startContainer(pod.containerName(DesiredPod.sidecarName))
                // The app containers start once the sidecar answers /ready; meanwhile
                // the loop goes on with other pods.
                awaitingSidecar[pod.podmanName] = (pod, Date())
                return
            }
            try startAppContainers(pod)
        } catch {
            failed(pod, error)
        }
    }

    /// Creates the app containers podman does not have yet (an agent stopped halfway
    /// leaves some) and starts them.
    private func startAppContainers(_ pod: DesiredPod) throws {
        for container in pod.template.containers {
            let name = pod.containerName(container.name)
            if try podman.inspectContainer(name) == nil {
                let imageUser = try podman.inspectImage(container.image)?.Config?.User
                try podman.createContainer(appSpec(pod, container, imageUser: imageUser))
            }
            try podman.startContainer(name)
            try checkNotSidecarIDs(name)
        }
        podRetryAt[pod.podmanName] = nil
        podMessages[pod.podmanName] = nil
        logger.info("pod started", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "injected": "\(pod.injected)"])
    }

    /// Starts the app containers of pods whose sidecars became ready; fails those whose
    /// sidecars took longer than `sidecarReadyTimeout`. Each sidecar is asked once, with
    /// a short deadline.
    private func advanceAwaitingSidecars() {
        for (name, waiting) in awaitingSidecar {
            let socket = "\(settings.runDirectory)/\(waiting.pod.directoryName)/run/proxy.sock"
            if let (status, _) = try? AdminClient(endpoint: .unix(path: socket), timeout: 0.2).get("/ready"),
                status == 200
            {
                awaitingSidecar[name] = nil
                do {
                    try startAppContainers(waiting.pod)
                } catch {
                    failed(waiting.pod, error)
                }
            } else if Date().timeIntervalSince(waiting.since) > Self.sidecarReadyTimeout {
                awaitingSidecar[name] = nil
                let reason = "the sidecar did not become ready within \(Int(Self.sidecarReadyTimeout)) s"
                failed(waiting.pod, PodmanError(status: nil, message: reason))
            }
        }
    }

    /// A pod that could not be started: removed, and retried after a backoff (1 s
    /// doubling to 30 s) with the reason in its status.
    private func failed(_ pod: DesiredPod, _ error: any Error) {
        let failures = (podRetryAt[pod.podmanName]?.failures ?? 0) + 1
        let delay = min(30, pow(2, Double(failures - 1)))
        podRetryAt[pod.podmanName] = (Date() + delay, failures)
        podMessages[pod.podmanName] = "\(error)"
        awaitingSidecar[pod.podmanName] = nil
        podSockets?.close(key: pod.podmanName)
        logger.error(
            "cannot start pod; retrying",
            metadata: ["pod": "\(pod.namespace)/\(pod.name)", "error": "\(error)", "retry_in_s": "\(delay)"]
        )
        try? podman.removePod(pod.podmanName)
    }

    static let agentSocketInPod = "/var/run/beemesh-agent/agent.sock"

    /// Opens the agent socket of a pod that is already running.
    private func openPodSocket(_ pod: DesiredPod) {
        do {
            let ip = try infraContainer(of: pod).ip
            try podSockets?.open(
                try pod.binding(podIP: ip, trustDomain: nodeCA.trustDomain),
                at: "\(settings.runDirectory)/\(pod.directoryName)/agent/agent.sock",
                key: pod.podmanName
            )
        } catch {
            logger.error(
                "cannot open the pod's agent socket",
                metadata: ["pod": "\(pod.podmanName)", "error": "\(error)"]
            )
        }
    }

    private func prepareDirectories(_ directory: String) throws {
        let manager = FileManager.default
        for (name, owner, mode) in [
            ("", 0 as UInt32, 0o711 as Int), ("config", 0, 0o755), ("identity", settings.sidecarUser, 0o700),
            ("run", settings.sidecarUser, 0o755), ("agent", 0, 0o755),
        ] {
            let path = name.isEmpty ? directory : "\(directory)/\(name)"
            try manager.createDirectory(atPath: path, withIntermediateDirectories: true)
            chmod(path, mode_t(mode))
            chown(path, owner, owner)
        }
    }

    /// Issues the pod's SVID and writes `cert.pem`, `key.pem` (0600, the sidecar's) and
    /// `bundle.pem`, each replaced atomically.
    func issueIdentity(for pod: DesiredPod, into directory: String) throws {
        let id = try SpiffeID(
            trustDomain: nodeCA.trustDomain,
            namespace: pod.namespace,
            serviceAccount: pod.template.serviceAccount
        )
        let credentials = try nodeCA.issueWorkload(id, validity: settings.certificateTTL)
        let files: [(String, String, mode_t)] = [
            ("bundle.pem", credentials.bundle.pemEncoded, 0o644),
            ("key.pem", credentials.key.pemEncoded, 0o600),
            ("cert.pem", credentials.chain.map(\.pemEncoded).joined(), 0o644),
        ]
        for (name, contents, mode) in files {
            let path = "\(directory)/\(name)"
            try PEMFile.write(path, contents, mode: mode)
            chown(path, settings.sidecarUser, settings.sidecarUser)
        }
    }

    private func infraContainer(of pod: DesiredPod) throws -> (ip: String?, netns: String) {
        guard let inspect = try podman.inspectPod(pod.podmanName), let infra = inspect.InfraContainerID,
            let container = try podman.inspectContainer(infra), let netns = container.NetworkSettings?.SandboxKey,
            !netns.isEmpty
        else {
            throw PodmanError(status: nil, message: "pod \(pod.podmanName) has no network namespace")
        }
        let ip = container.NetworkSettings?.IPAddress
        return (ip?.isEmpty == false ? ip : nil, netns)
    }

    private func installCapture(_ pod: DesiredPod, netns: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: settings.proxyBinary)
        process.arguments = pod.captureArguments(netns: netns)
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw PodmanError(status: nil, message: "capture install failed: \(text)")
        }
    }

    /// The sidecar's descriptor limit: two per relayed connection, with room for the
    /// unauthenticated ones its caps admit (`inbound.maxUnauthenticated`, 1,024).
    static let sidecarOpenFiles: UInt64 = 16384

    private func sidecarSpec(_ pod: DesiredPod, directory: String) -> PodmanClient.ContainerSpec {
        var mounts = [
            PodmanClient.Mount(destination: "/etc/beemesh/pod", source: directory + "/config", options: ["ro"]),
            PodmanClient.Mount(destination: "/etc/beemesh/identity", source: directory + "/identity", options: ["ro"]),
            PodmanClient.Mount(destination: "/etc/beemesh/policies", source: settings.policies, options: ["ro"]),
            PodmanClient.Mount(destination: "/var/run/beemesh", source: directory + "/run", options: ["rw"]),
        ]
        if podSockets != nil {
            // The pod's own agent socket, never the node's control socket.
            mounts.append(
                PodmanClient.Mount(
                    destination: (Self.agentSocketInPod as NSString).deletingLastPathComponent,
                    source: directory + "/agent",
                    options: ["rw"]
                )
            )
        }
        return PodmanClient.ContainerSpec(
            name: pod.containerName(DesiredPod.sidecarName),
            pod: pod.podmanName,
            image: settings.sidecarImage,
            command: ["run", "--config", "/etc/beemesh/pod/proxy.yaml"],
            entrypoint: ["/usr/local/bin/beemesh-proxy"],
            env: [:],
            user: "\(settings.sidecarUser):\(settings.sidecarUser)",
            labels: ["beemesh.io/container": DesiredPod.sidecarName],
            mounts: mounts,
            work_dir: nil,
            stop_timeout: 35,
            init: nil,
            // podman replaces every default limit once one is given, and its own nproc
            // was refused on the hosts this is built on (so was 65,536; 32,768 is
            // taken): nproc is named too. It counts every thread of uid 1337 on the
            // host, all sidecars together.
            r_limits: [
                .init(type: "nofile", hard: Self.sidecarOpenFiles, soft: Self.sidecarOpenFiles),
                .init(type: "nproc", hard: 32768, soft: 32768),
            ]
        )
    }

    /// What app containers may not do, whatever their image or manifest asks: change
    /// their uid or gid (which could become the sidecar's, 1337, and leave capture),
    /// gain privileges through setuid files, program the network or open raw sockets.
    static let appCapabilitiesDropped = [
        "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETFCAP", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_SYS_ADMIN",
    ]

    /// Why an app container may not run as its manifest and image say: a uid or gid
    /// that is the sidecar's, or a user or group the image names (it resolves only
    /// inside the image, at start, and could be 1337 until the running check stops it)
    /// that the manifest does not override with `runAsUser` / `runAsGroup`. `root`
    /// is uid and gid 0. nil: it may.
    static func sidecarIDRefusal(imageUser: String?, runAsUser: UInt32?, runAsGroup: UInt32?) -> String? {
        enum ID {
            case unset, number(UInt32), name(String)

            init(_ text: String?) {
                guard let text, !text.isEmpty else {
                    self = .unset
                    return
                }
                if text == "root" {
                    self = .number(0)
                } else if let number = UInt32(text) {
                    self = .number(number)
                } else {
                    self = .name(text)
                }
            }
        }
        let parts = (imageUser ?? "").split(separator: ":", maxSplits: 1).map(String.init)
        let user = runAsUser.map(ID.number) ?? ID(parts.first)
        let group = runAsGroup.map(ID.number) ?? ID(parts.count > 1 ? parts[1] : nil)
        for (kind, id, field) in [("user", user, "runAsUser"), ("group", group, "runAsGroup")] {
            switch id {
            case .name(let name):
                return "runs as the image's \(kind) '\(name)', a name: set securityContext.\(field)"
            case .number(let number) where number == Workload.sidecarID:
                return "runs as \(kind) \(number), the sidecar's (image user '\(imageUser ?? "")')"
            case .number, .unset:
                continue
            }
        }
        return nil
    }

    /// The podman `user` of an app container: the manifest's ids over the image's.
    /// Always `uid:gid` when anything names a user: a bare uid would let the runtime
    /// take the group from the image's `/etc/passwd`, which could say 1337. The group
    /// is `runAsGroup`, else the image's, else 0 (as Docker does for a uid without an
    /// entry). nil: neither the manifest nor the image names one (root).
    static func appUser(imageUser: String?, runAsUser: UInt32?, runAsGroup: UInt32?) -> String? {
        let parts = (imageUser ?? "").split(separator: ":", maxSplits: 1).map(String.init)
        guard runAsUser != nil || runAsGroup != nil || !parts.isEmpty else { return nil }
        let user = runAsUser.map(String.init) ?? parts.first.map { $0 == "root" ? "0" : $0 } ?? "0"
        let group = runAsGroup.map(String.init) ?? (parts.count > 1 ? (parts[1] == "root" ? "0" : parts[1]) : "0")
        return "\(user):\(group)"
    }

    /// Reads the running container's ids from the kernel (a user name in the image is
    /// resolved only at start): one that holds the sidecar's uid or gid is removed, and
    /// the pod fails with the reason.
    private func checkNotSidecarIDs(_ name: String) throws {
        guard let pid = try podman.inspectContainer(name)?.State.Pid, pid > 0,
            let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        else { return }
        let sidecar = String(Workload.sidecarID)
        for line in status.split(separator: "\n")
        where line.hasPrefix("Uid:") || line.hasPrefix("Gid:") || line.hasPrefix("Groups:") {
            guard line.split(whereSeparator: \.isWhitespace).dropFirst().contains(Substring(sidecar)) else { continue }
            try? podman.stopContainer(name, timeout: 0)
            throw PodmanError(
                status: nil,
                message:
                    "container \(name) runs with \(line.prefix { $0 != ":" }.lowercased()) \(sidecar), the sidecar's: refused"
            )
        }
    }

    private func appSpec(_ pod: DesiredPod, _ container: Container, imageUser: String?) throws
        -> PodmanClient.ContainerSpec
    {
        if let reason = Self.sidecarIDRefusal(
            imageUser: imageUser,
            runAsUser: container.runAsUser,
            runAsGroup: container.runAsGroup
        ) {
            throw PodmanError(status: nil, message: "container \(container.name) \(reason): refused")
        }
        return PodmanClient.ContainerSpec(
            name: pod.containerName(container.name),
            pod: pod.podmanName,
            image: container.image,
            command: container.args.isEmpty ? nil : container.args,
            entrypoint: container.command.isEmpty ? nil : container.command,
            env: Dictionary(container.env.map { ($0.name, $0.value) }, uniquingKeysWith: { _, last in last }),
            user: Self.appUser(imageUser: imageUser, runAsUser: container.runAsUser, runAsGroup: container.runAsGroup),
            labels: ["beemesh.io/container": container.name],
            mounts: [],
            work_dir: container.workingDir,
            stop_timeout: 10,
            init: true,
            cap_drop: Self.appCapabilitiesDropped,
            no_new_privileges: true
        )
    }

    // MARK: running

    /// The pod's containers as podman reports them; exited ones restarted with backoff;
    /// the identity renewed at half-life.
    private func check(_ pod: DesiredPod, created: Date?) -> PodStatus {
        if podRetryAt[pod.podmanName] != nil { return status(of: pod, created: created, phase: "Pending") }
        let names = (pod.injected ? [DesiredPod.sidecarName] : []) + pod.template.containers.map(\.name)
        var containers: [PodStatus.ContainerStatus] = []
        var waiting = false
        var appMissing = false
        for name in names {
            let full = pod.containerName(name)
            let answer = Result { try podman.inspectContainer(full) }
            let inspect = try? answer.get()
            if name != DesiredPod.sidecarName, case .success(.none) = answer { appMissing = true }
            var history = histories[full] ?? ContainerHistory()
            var state = inspect?.State.Status ?? "missing"
            if let inspect, !inspect.State.Running, ["exited", "stopped", "created", "configured"].contains(state) {
                if let retryAt = history.retryAt, retryAt > Date() {
                    waiting = true
                } else {
                    history.restarts += 1
                    history.retryAt = Date() + min(30, pow(2, Double(history.restarts - 1)))
                    logger.warning(
                        "container exited; restarting",
                        metadata: [
                            "pod": "\(pod.namespace)/\(pod.name)", "container": "\(name)",
                            "exit_code": "\(inspect.State.ExitCode)", "restarts": "\(history.restarts)",
                        ]
                    )
                    if (try? podman.startContainer(full)) != nil { state = "running" }
                }
            } else if inspect?.State.Running == true, let retryAt = history.retryAt, retryAt < Date() - 60 {
                history.retryAt = nil  // ran a minute: the next exit starts the backoff afresh
            }
            histories[full] = history
            containers.append(
                PodStatus.ContainerStatus(
                    name: name,
                    image: name == DesiredPod.sidecarName
                        ? settings.sidecarImage : pod.template.containers.first { $0.name == name }?.image ?? "",
                    state: state,
                    restarts: history.restarts,
                    exitCode: inspect.map { $0.State.Running ? nil : $0.State.ExitCode } ?? nil,
                    sidecar: name == DesiredPod.sidecarName
                )
            )
        }
        // App containers podman does not have (the agent stopped while the sidecar
        // started): they start once the sidecar answers.
        if pod.injected, appMissing, awaitingSidecar[pod.podmanName] == nil {
            awaitingSidecar[pod.podmanName] = (pod, Date())
        }
        if pod.injected { renewIdentityIfDue(pod) }
        let allRunning = containers.allSatisfy { $0.state == "running" }
        var status = status(
            of: pod,
            created: created,
            phase: allRunning ? "Running" : waiting ? "CrashLoopBackOff" : "Pending"
        )
        status.containers = containers
        return status
    }

    private func status(of pod: DesiredPod, created: Date?, phase: String) -> PodStatus {
        let ip = (try? infraContainer(of: pod))?.ip
        let identity =
            pod.injected
            ? (try? SpiffeID(
                trustDomain: nodeCA.trustDomain,
                namespace: pod.namespace,
                serviceAccount: pod.template.serviceAccount
            ))?.description
            : nil
        return PodStatus(
            name: pod.name,
            namespace: pod.namespace,
            phase: phase,
            owner: pod.owner,
            ip: ip,
            node: settings.node,
            identity: identity,
            injected: pod.injected,
            created: created ?? Date(),
            containers: [],
            message: podMessages[pod.podmanName]
        )
    }

    @discardableResult
    func renewIdentityIfDue(_ pod: DesiredPod) -> Bool {
        let directory = "\(settings.runDirectory)/\(pod.directoryName)/identity"
        guard let pem = try? PEMFile.read(directory + "/cert.pem"),
            let leaf = try? Certificate.parseChain(pem: pem).first
        else { return false }
        // Half its lifetime left (certificates are backdated a minute for clock skew,
        // so the lifetime is the configured one, not notAfter - notBefore), and a new
        // one would last longer (the node CA's own expiry caps both).
        guard leaf.notAfter.timeIntervalSinceNow < settings.certificateTTL / 2,
            nodeCA.certificate.notAfter.timeIntervalSince(leaf.notAfter) > 1
        else { return false }
        do {
            try issueIdentity(for: pod, into: directory)
            logger.info("pod identity renewed", metadata: ["pod": "\(pod.namespace)/\(pod.name)"])
            return true
        } catch {
            logger.error("cannot renew the pod identity", metadata: ["pod": "\(pod.name)", "error": "\(error)"])
            return false
        }
    }

    // MARK: removing

    /// App containers first, then the sidecar (which drains what is left), then the pod.
    private func teardown(_ name: String, reason: String) {
        logger.info("removing pod", metadata: ["pod": "\(name)", "reason": "\(reason)"])
        let members = (try? podman.inspectPod(name))??.Containers ?? []
        let sidecar = "\(name).\(DesiredPod.sidecarName)"
        for member in members where member.Name != sidecar && !member.Name.hasSuffix("-infra") {
            try? podman.stopContainer(member.Name, timeout: 10)
        }
        try? podman.stopContainer(sidecar, timeout: 35)
        podSockets?.close(key: name)
        do {
            try podman.removePod(name)
        } catch {
            logger.error("cannot remove pod", metadata: ["pod": "\(name)", "error": "\(error)"])
            return
        }
        try? FileManager.default.removeItem(
            atPath: "\(settings.runDirectory)/\(DesiredPod.directoryName(podmanName: name))"
        )
    }

    /// Drops what the loop remembered of a removed pod (on the loop's thread).
    private func forget(_ name: String) {
        awaitingSidecar[name] = nil
        histories = histories.filter { !$0.key.hasPrefix(name + ".") }
        podRetryAt[name] = nil
        podMessages[name] = nil
    }
}

/// An apply that would leave the desired state contradicting itself.
struct ApplyConflict: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}
