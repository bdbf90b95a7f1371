import Foundation
import Kademlia
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import Proxy
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
        if let pods = configuration.pods {
            let here = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            reconciler = Reconciler(
                settings: Reconciler.Settings(
                    podmanSocket: pods.podmanSocket,
                    sidecarImage: pods.sidecarImage,
                    proxyBinary: pods.proxyBinary ?? here.appendingPathComponent("beemesh-proxy").path,
                    runDirectory: pods.runDirectory,
                    policies: pods.policies,
                    agentSocket: configuration.api.socket,
                    certificateTTL: pods.certificateTTL,
                    node: configuration.node.name,
                    agentID: identity.id.description
                ),
                store: try WorkloadStore(directory: configuration.node.stateDirectory + "/workloads"),
                nodeCA: identity.nodeCA,
                logger: logger
            )
        } else {
            reconciler = nil
        }
    }

    public func run() async throws {
        try await dht.start().get()
        let api = AgentAPI(
            dht: dht,
            validator: ServiceRecordValidator(bundle: dht.identity.credentials.bundle),
            metrics: metrics,
            reconciler: reconciler
        )
        var listeners: [any Channel] = []
        if let socket = configuration.api.socket {
            try AdminSocket.prepare(socket)
            let channel = try await apiBootstrap(api).bind(unixDomainSocketPath: socket).get()
            // Sidecars run as another user (1337); what they may do here is publish records
            // they signed and read public ones, so the socket is open to local users.
            chmod(socket, 0o666)
            listeners.append(channel)
            logger.info("agent API listening", metadata: ["socket": "\(socket)"])
        }
        if let listen = configuration.api.listen {
            let channel = try await apiBootstrap(api).bind(host: listen.host, port: listen.port).get()
            listeners.append(channel)
            logger.info("agent API listening", metadata: ["listen": "\(channel.localAddress?.description ?? "?")"])
        }
        if let pods = configuration.pods {
            try FileManager.default.createDirectory(atPath: pods.runDirectory, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: pods.policies, withIntermediateDirectories: true)
        }
        reconciler?.start()
        try? await gracefulShutdown()
        logger.info("agent stopping")
        reconciler?.stop()
        for channel in listeners { try? await channel.close().get() }
        if let socket = configuration.api.socket { unlink(socket) }
        try? await dht.stop().get()
        try await group.shutdownGracefully()
    }

    private func apiBootstrap(_ api: AgentAPI) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AgentAPIHandler(api: api))
                }
            }
    }
}
