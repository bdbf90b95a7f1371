import Foundation
import Kademlia
import Logging
import MeshProcess
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// `beemesh-agent run`: the DHT server and the local API that sidecars and `beectl`
/// use. Runs until its service group is told to shut down.
public final class AgentServer: Service, Sendable {
    public let configuration: AgentConfiguration
    public let dht: DHTService
    private let group: MultiThreadedEventLoopGroup
    private let logger: Logger
    private let metrics: PrometheusCollectorRegistry?
    /// Runs the node's pods; nil for a DHT-only agent.
    let reconciler: Reconciler?
    /// Each injected pod's own agent socket.
    private let podSockets: PodSockets?
    /// The StatefulSets' Raft groups (nil: a DHT-only agent).
    let raftGroups: RaftGroups?
    /// Where pods are published for other nodes (nil: on their pod addresses).
    private let published: (host: String, ports: ClosedRange<UInt16>)?

    /// - Parameter metrics: the registry swift-metrics reports to, served at `/metrics`.
    public init(configuration: AgentConfiguration, logger: Logger, metrics: PrometheusCollectorRegistry? = nil) throws {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        let identity = try NodeIdentity.load(configuration.node)
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        dht = try DHTService(
            identity: identity,
            configuration: configuration.dht,
            loop: group.next(),
            logger: logger,
            recordDirectory: configuration.node.stateDirectory + "/records"
        )
        let published = configuration.pods?.published(dhtHost: configuration.dht.advertised.host)
        self.published = published
        if let pods = configuration.pods {
            let raftGroups = try RaftGroups(configuration: configuration, identity: identity, dht: dht, logger: logger)
            self.raftGroups = raftGroups
            let sockets = PodSockets(
                group: group,
                sidecarUser: KubernetesObject.sidecarID,
                raftGroups: raftGroups,
                logger: logger
            )
            podSockets = sockets
            let here = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            reconciler = try Reconciler(
                settings: Reconciler.Settings(
                    podmanSocket: pods.podmanSocket,
                    sidecarImage: pods.sidecarImage,
                    proxyBinary: pods.proxyBinary ?? here.appendingPathComponent("beemesh-proxy").path,
                    runDirectory: pods.runDirectory,
                    policies: pods.policies,
                    certificateTTL: pods.certificateTTL,
                    node: configuration.node.name,
                    agentID: identity.id.description,
                    published: published.map {
                        ($0.host, $0.ports, configuration.node.stateDirectory + "/host-ports.json")
                    }
                ),
                store: try WorkloadStore(directory: configuration.node.stateDirectory + "/workloads"),
                nodeCA: identity.nodeCA,
                podSockets: sockets,
                raftGroups: raftGroups,
                logger: logger
            )
        } else {
            reconciler = nil
            podSockets = nil
            raftGroups = nil
        }
    }

    public func run() async throws {
        try await dht.start().get()
        let api = AgentAPI(
            dht: dht,
            validator: ServiceRecordValidator(bundle: dht.identity.credentials.bundle),
            access: configuration.api.access,
            logger: logger,
            metrics: metrics,
            reconciler: reconciler
        )
        podSockets?.serve(api)
        var listeners: [any Channel] = []
        if let socket = configuration.api.socket {
            try AdminSocket.prepare(socket)
            let channel = try await APIListeners.control(group: group, api: api).bind(unixDomainSocketPath: socket)
                .get()
            // Root and the socket's group may connect; each caller is then authorized by
            // its credentials (api.access). Sidecars use sockets of their own.
            guard chown(socket, 0, configuration.api.socketGroup) == 0, chmod(socket, 0o660) == 0 else {
                throw AdminSocket.Unusable(path: socket, reason: "cannot set its group and mode 0660 (errno \(errno))")
            }
            listeners.append(channel)
            logger.info(
                "agent API listening",
                metadata: ["socket": "\(socket)", "group": "\(configuration.api.socketGroup)", "mode": "0660"]
            )
        }
        if let listen = configuration.api.listen {
            let channel = try await APIListeners.network(group: group, api: api).bind(
                host: listen.host,
                port: listen.port
            )
            .get()
            listeners.append(channel)
            logger.info("agent API listening", metadata: ["listen": "\(channel.localAddress?.description ?? "?")"])
        }
        if let pods = configuration.pods {
            try FileManager.default.createDirectory(atPath: pods.runDirectory, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: pods.policies, withIntermediateDirectories: true)
        }
        if let published {
            logger.info(
                "pods that publish a service are published on host ports",
                metadata: ["address": "\(published.host)", "ports": "\(published.ports)"]
            )
            // A pod reaching another pod of this node at its host port is answered
            // through conntrack only if bridged packets pass netfilter.
            let bridged = try? String(contentsOfFile: "/proc/sys/net/bridge/bridge-nf-call-iptables", encoding: .utf8)
            if bridged?.hasPrefix("1") != true {
                logger.warning(
                    "br_netfilter is not active (net.bridge.bridge-nf-call-iptables): pods of this node cannot reach each other through their host ports"
                )
            }
        }
        try await raftGroups?.start()
        reconciler?.start()
        try? await gracefulShutdown()
        logger.info("agent stopping")
        await reconciler?.stop()
        await raftGroups?.stop()
        podSockets?.closeAll()
        for channel in listeners { try? await channel.close().get() }
        if let socket = configuration.api.socket { unlink(socket) }
        try? await dht.stop().get()
        try await group.shutdownGracefully()
    }
}
