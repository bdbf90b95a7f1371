import Foundation
import Logging
import MeshAPI
import MeshConfiguration
import MeshIdentity
import MeshNet

/// The reconciler's hands: every podman call, file and process a pod needs, one
/// `PodLifecycle.Directive` at a time. It decides nothing (`PodLifecycle` does) and
/// blocks: it runs on the reconciler's thread.
///
/// A pod is made in this order: the pod (its infra container holds the network
/// namespace), the pod's identity (an X.509-SVID from the node CA, in a per-pod
/// directory on tmpfs, replaced atomically), its sidecar configuration, its own agent
/// socket, the capture rules (installed from the host by `beemesh-proxy capture install
/// --netns`, so no container holds NET_ADMIN), the sidecar (uid/gid 1337, the policies
/// mounted read-only), and, once the sidecar answers `/ready`, the app containers. A
/// pod is removed app containers first and the sidecar last, so that it drains their
/// connections.
final class PodRuntime: @unchecked Sendable {
    static let managedLabel = "beemesh.io/agent"
    static let specLabel = "beemesh.io/spec"
    static let ownerLabel = "beemesh.io/owner"
    static let agentSocketInPod = "/var/run/beemesh-agent/agent.sock"

    let settings: Reconciler.Settings
    let podman: PodmanClient
    private let nodeCA: CertificateAuthority
    /// Each injected pod's own agent socket (nil: sidecars get no agent, and publish
    /// nothing).
    let podSockets: PodSockets?
    private let logger: Logger
    private var podmanService: ChildProcess?
    /// Which host port publishes which pod (nil: pods publish their pod address).
    private var hostPorts: HostPortTable?

    init(settings: Reconciler.Settings, nodeCA: CertificateAuthority, podSockets: PodSockets?, logger: Logger) throws {
        self.settings = settings
        self.podman = PodmanClient(socket: settings.podmanSocket)
        self.nodeCA = nodeCA
        self.podSockets = podSockets
        self.logger = logger
        if let published = settings.published {
            hostPorts = try HostPortTable.load(path: published.table, range: published.ports)
        }
    }

    var trustDomain: TrustDomain { nodeCA.trustDomain }

    /// Where a pod's files live: configuration, identity, the sidecar's admin socket and
    /// the pod's agent socket.
    func directory(of pod: DesiredPod) -> String { "\(settings.runDirectory)/\(pod.directoryName)" }

    // MARK: the podman service

    /// Where the PID of the podman service this agent started is kept, so that whoever
    /// cleans up after an agent that was killed (a test, the demo) stops that process
    /// by its PID, never by a name that another run's process shares.
    var podmanPIDFile: String { settings.podmanSocket + ".pid" }

    /// Starts `podman system service` on the configured socket when nothing answers there.
    func ensurePodmanService() {
        guard !podman.ping() else { return }
        logger.info("podman service not answering; starting it", metadata: ["socket": "\(settings.podmanSocket)"])
        try? FileManager.default.createDirectory(
            atPath: (settings.podmanSocket as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        do {
            let process = try ChildProcess.start([
                "podman", "system", "service", "--time=0", "unix://\(settings.podmanSocket)",
            ])
            podmanService = process
            try? PEMFile.write(podmanPIDFile, "\(process.pid)\n", mode: 0o644)
        } catch {
            logger.error("cannot start podman system service", metadata: ["error": "\(error)"])
            return
        }
        for _ in 0..<100 where !podman.ping() { Thread.sleep(forTimeInterval: 0.1) }
    }

    /// Stops the podman service this agent started, if it did.
    func stopPodmanService() {
        guard let podmanService else { return }
        podmanService.terminate()
        podmanService.waitUntilExit()
        unlink(podmanPIDFile)
    }

    // MARK: host ports

    /// The address other pods dial `pod` at: the node's advertised address and the
    /// pod's host port when it has one, else its pod address, else nil (not known).
    func endpoint(of pod: DesiredPod, podIP: String?, infraPort: UInt16? = nil) -> HostPort? {
        if let published = settings.published, pod.publishes {
            if hostPorts?.assigned[pod.podmanName] == nil, let infraPort, var table = hostPorts {
                // A running pod whose port the table lost: podman's mapping is the truth.
                table.adopt(pod.podmanName, port: infraPort)
                try? table.save(path: published.table)
                hostPorts = table
            }
            if let port = hostPorts?.assigned[pod.podmanName] {
                return HostPort(host: published.host, port: Int(port))
            }
        }
        return podIP.map(DesiredPod.endpoint(podIP:))
    }

    /// The port mapping that publishes a pod that others dial on a host port of its
    /// own, allocated (and recorded) now if it has none; nil for a pod that publishes
    /// nothing, or when host ports are off.
    private func hostPortMapping(_ pod: DesiredPod) throws -> [PodmanClient.PortMapping]? {
        guard pod.publishes, let published = settings.published, var table = hostPorts else { return nil }
        let bindHost = published.host
        guard
            let port = table.port(
                for: pod.podmanName,
                usable: { HostPortTable.bindable(host: bindHost, port: $0) }
            )
        else {
            throw PodmanError(
                status: nil,
                message:
                    "no free host port in \(published.ports.lowerBound)-\(published.ports.upperBound) (pods.hostPorts)"
            )
        }
        if table != hostPorts {
            try table.save(path: published.table)
            hostPorts = table
        }
        return [.init(host_ip: bindHost, host_port: port, container_port: DesiredPod.mtlsPort)]
    }

    /// Frees the host ports of pods that are not asked for (or no longer publish): a
    /// pod replaced (its objects changed, or rebuilt) keeps its port. A port freed
    /// while podman still holds it (its pod is being removed) is skipped by the next
    /// allocation, which binds it first.
    func keepHostPorts(for pods: Set<String>) {
        guard let published = settings.published, var table = hostPorts else { return }
        let freed = table.keep(only: pods)
        guard !freed.isEmpty else { return }
        logger.info("host ports freed", metadata: ["pods": "\(freed)"])
        do {
            try table.save(path: published.table)
        } catch {
            logger.error("cannot save the host port table", metadata: ["error": "\(error)"])
        }
        hostPorts = table
    }

    // MARK: observing

    /// The pods podman runs for this agent: name, spec digest, and when it was created.
    func existingPods() throws -> [String: (digest: String, created: Date?)] {
        var pods: [String: (digest: String, created: Date?)] = [:]
        for summary in try podman.listPods(label: "\(Self.managedLabel)=\(settings.agentID)")
        where pods[summary.Name] == nil {
            pods[summary.Name] = (summary.Labels?[Self.specLabel] ?? "", summary.createdDate)
        }
        return pods
    }

    /// What podman and the pod's files say about a pod that runs with its spec: one
    /// inspect per container, the infra container's address, the certificate's expiry.
    func observe(_ pod: DesiredPod) -> PodLifecycle.Observation {
        var containers: [String: PodLifecycle.ContainerState] = [:]
        for name in (pod.injected ? [DesiredPod.sidecarName] : []) + pod.template.containers.map(\.name) {
            switch Result(catching: { try podman.inspectContainer(pod.containerName(name)) }) {
            case .success(.none):
                containers[name] = .missing
            case .success(.some(let inspect)) where inspect.State.Running:
                containers[name] = .running
            case .success(.some(let inspect))
            where ["exited", "stopped", "created", "configured"].contains(inspect.State.Status):
                containers[name] = .stopped(status: inspect.State.Status, exitCode: inspect.State.ExitCode)
            case .success(.some(let inspect)):
                containers[name] = .other(inspect.State.Status)
            case .failure:
                containers[name] = .other("unknown")
            }
        }
        let certificate = try? PEMFile.read(directory(of: pod) + "/identity/cert.pem")
        let infra = try? infraContainer(of: pod.podmanName)
        return PodLifecycle.Observation(
            containers: containers,
            ip: infra?.ip,
            networkIntact: !pod.injected || networkIntact(podmanName: pod.podmanName, infra: infra),
            identityExpiry: pod.injected
                ? certificate.flatMap { try? Certificate.parseChain(pem: $0).first?.notAfter } : nil,
            agentSocketOpen: !pod.injected || podSockets?.pods.contains(pod.podmanName) != false
        )
    }

    /// Whether the pod still has the network namespace its capture was installed in:
    /// its infra container runs, in the namespace recorded at creation. One that
    /// stopped (the node lost power, someone killed it) comes back with a new, empty
    /// namespace, and containers restarted into it would run without capture. A pod
    /// whose namespace was not recorded (made by an earlier agent) is adopted as it is.
    private func networkIntact(podmanName: String, infra: Infra?) -> Bool {
        guard let infra else { return true }  // podman did not answer: nothing is known
        guard infra.running, !infra.netns.isEmpty else { return false }
        let file = "\(settings.runDirectory)/\(DesiredPod.directoryName(podmanName: podmanName))/netns"
        if let recorded = try? PEMFile.read(file) { return recorded == infra.netns }
        // No record (the pod's directory is on tmpfs, or an earlier agent made the
        // pod): intact only if its namespace holds the capture table.
        guard (try? ChildProcess.run([settings.proxyBinary, "capture", "show", "--netns", infra.netns]))?.status == 0
        else { return false }
        try? PEMFile.write(file, infra.netns, mode: 0o644)
        return true
    }

    /// Whether the pod's sidecar answers `/ready`: asked once, with a short deadline.
    func sidecarReady(_ pod: DesiredPod) -> Bool {
        let socket = directory(of: pod) + "/run/proxy.sock"
        guard let (status, _) = try? AdminClient(endpoint: .unix(path: socket), timeout: 0.2).get("/ready") else {
            return false
        }
        return status == 200
    }

    // MARK: creating

    /// The pod, its identity, configuration, agent socket and capture, and its sidecar
    /// (started; the app containers wait for it). A pod without a sidecar gets only the
    /// pod: `startApps` follows at once.
    func create(_ pod: DesiredPod) throws {
        let directory = directory(of: pod)
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
                hostname: pod.name,
                portmappings: try hostPortMapping(pod)
            )
        )
        try podman.startPod(pod.podmanName)
        guard pod.injected else { return }
        let infra = try networkNamespace(of: pod)
        let endpoint = endpoint(of: pod, podIP: infra.ip)
        try PEMFile.write(
            directory + "/config/proxy.yaml",
            try pod.proxyConfiguration(endpoint: endpoint, agentSocket: podSockets.map { _ in Self.agentSocketInPod }),
            mode: 0o644
        )
        if let podSockets {
            try podSockets.open(
                try pod.binding(endpoint: endpoint, trustDomain: nodeCA.trustDomain),
                at: directory + "/agent/agent.sock",
                key: pod.podmanName
            )
        }
        try installCapture(pod, netns: infra.netns)
        try PEMFile.write(directory + "/netns", infra.netns, mode: 0o644)
        try podman.createContainer(sidecarSpec(pod, directory: directory))
        try podman.startContainer(pod.containerName(DesiredPod.sidecarName))
    }

    /// Creates the app containers podman does not have yet (an agent stopped halfway
    /// leaves some) and starts them.
    func startApps(_ pod: DesiredPod) throws {
        for container in pod.template.containers {
            let name = pod.containerName(container.name)
            if try podman.inspectContainer(name) == nil {
                let imageUser = try podman.inspectImage(container.image)?.Config?.User
                try podman.createContainer(appSpec(pod, container, imageUser: imageUser))
            }
            try podman.startContainer(name)
            try checkNotSidecarIDs(name)
        }
        logger.info("pod started", metadata: ["pod": "\(pod.namespace)/\(pod.name)", "injected": "\(pod.injected)"])
    }

    /// Removes what a failed attempt made: the pod and its agent socket.
    func discard(_ name: String) {
        podSockets?.close(key: name)
        try? podman.removePod(name)
    }

    /// Starts an exited container again; false when podman could not.
    func restart(pod: String, container: String, restarts: Int) -> Bool {
        // podman would start a stopped infra container first, in a new namespace
        // without capture: such a pod is rebuilt by the next pass instead. (A pod
        // without a sidecar has no capture to lose.)
        let injected: Bool
        switch Result(catching: { try podman.inspectContainer("\(pod).\(DesiredPod.sidecarName)") }) {
        case .success(let sidecar): injected = sidecar != nil
        case .failure: injected = true  // podman did not say: assume one
        }
        guard !injected || networkIntact(podmanName: pod, infra: try? infraContainer(of: pod)) else {
            logger.warning(
                "not restarting a container whose pod lost its network namespace",
                metadata: ["pod": "\(pod)"]
            )
            return false
        }
        logger.warning(
            "container exited; restarting",
            metadata: ["pod": "\(pod)", "container": "\(container)", "restarts": "\(restarts)"]
        )
        do {
            try podman.startContainer("\(pod).\(container)")
            return true
        } catch {
            logger.error("cannot restart container", metadata: ["pod": "\(pod)", "error": "\(error)"])
            return false
        }
    }

    func renewIdentity(_ pod: DesiredPod) {
        do {
            try issueIdentity(for: pod, into: directory(of: pod) + "/identity")
            logger.info("pod identity renewed", metadata: ["pod": "\(pod.namespace)/\(pod.name)"])
        } catch {
            logger.error("cannot renew the pod identity", metadata: ["pod": "\(pod.name)", "error": "\(error)"])
        }
    }

    /// Opens the agent socket of a pod that is already running (the agent restarted).
    func openAgentSocket(_ pod: DesiredPod) {
        do {
            let infra = try networkNamespace(of: pod)
            try podSockets?.open(
                try pod.binding(
                    endpoint: endpoint(of: pod, podIP: infra.ip, infraPort: infra.hostPort),
                    trustDomain: nodeCA.trustDomain
                ),
                at: directory(of: pod) + "/agent/agent.sock",
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

    /// A pod's infra container: its address, its network namespace (empty when it has
    /// none, as when it stopped), whether it runs, and the host port forwarded to the
    /// sidecar's mTLS port.
    struct Infra {
        var ip: String?
        var netns: String
        var running: Bool
        var hostPort: UInt16?
    }

    func infraContainer(of podmanName: String) throws -> Infra {
        guard let inspect = try podman.inspectPod(podmanName), let infra = inspect.InfraContainerID,
            let container = try podman.inspectContainer(infra)
        else {
            throw PodmanError(status: nil, message: "pod \(podmanName) has no infra container")
        }
        let network = container.NetworkSettings
        let bindings = network?.Ports?["\(DesiredPod.mtlsPort)/tcp"] ?? nil
        return Infra(
            ip: network?.IPAddress?.isEmpty == false ? network?.IPAddress : nil,
            netns: network?.SandboxKey ?? "",
            running: container.State.Running,
            hostPort: bindings?.lazy.compactMap { $0.HostPort.flatMap { UInt16($0) } }.first
        )
    }

    /// The infra container of a pod whose network namespace is there to use.
    private func networkNamespace(of pod: DesiredPod) throws -> Infra {
        let infra = try infraContainer(of: pod.podmanName)
        guard infra.running, !infra.netns.isEmpty else {
            throw PodmanError(status: nil, message: "pod \(pod.podmanName) has no network namespace")
        }
        return infra
    }

    private func installCapture(_ pod: DesiredPod, netns: String) throws {
        let (status, output) = try ChildProcess.run([settings.proxyBinary] + pod.captureArguments(netns: netns))
        guard status == 0 else {
            throw PodmanError(
                status: nil,
                message: "capture install failed: \(String(decoding: output, as: UTF8.self))"
            )
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
            case .number(let number) where number == KubernetesObject.sidecarID:
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
        let sidecar = String(KubernetesObject.sidecarID)
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

    // MARK: removing

    /// App containers first, then the sidecar (which drains what is left), then the pod.
    func teardown(_ name: String, reason: String) {
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
}
