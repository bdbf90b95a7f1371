import Logging
import MeshIdentity
import MeshTLS
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// The sidecar: the inbound mTLS listener, the outbound route listeners, credential
/// reloading, and a graceful drain on shutdown.
///
/// `run()` makes it a swift-service-lifecycle `Service` (SIGTERM → graceful shutdown →
/// drain); tests drive `start()` and `shutdown()` directly.
public final class ProxyServer: Service, Sendable {
    /// The addresses actually bound (useful with port 0).
    public struct BoundAddresses: Sendable {
        public let inbound: SocketAddress
        /// One per route, in configuration order.
        public let routes: [SocketAddress]
    }

    private let configuration: ProxyConfiguration
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let environment: ProxyEnvironment
    private let listeners = NIOLockedValueBox<[any Channel]>([])

    /// Loads the credentials; throws when they are unusable.
    public init(configuration: ProxyConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        let credentials = try TLSCredentialsSource(
            paths: CredentialPaths(
                certificate: configuration.identity.certificate,
                privateKey: configuration.identity.privateKey,
                trustBundle: configuration.identity.trustBundle
            ),
            logger: logger
        )
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.workers)
        self.environment = ProxyEnvironment(
            configuration: configuration,
            credentials: credentials,
            tracker: ConnectionTracker(),
            logger: logger
        )
    }

    /// The identity source, so callers can trigger a reload check.
    public var credentials: TLSCredentialsSource { environment.credentials }

    /// Live downstream connections.
    public var activeConnections: Int { environment.tracker.count }

    /// Binds every listener.
    public func start() async throws -> BoundAddresses {
        let environment = self.environment
        let inbound = try await bootstrap { channel in
            try channel.pipeline.syncOperations.addHandlers(
                MeshTLSHandler(
                    context: environment.credentials.current,
                    expectedPeer: nil,
                    handshakeTimeout: environment.handshakeTimeout,
                    logger: environment.logger
                ),
                InboundPrefaceHandler(environment: environment)
            )
        }.bind(host: configuration.inbound.listen.host, port: configuration.inbound.listen.port).get()
        listeners.withLockedValue { $0.append(inbound) }
        environment.listenerPorts.insert(inbound.localAddress!.port!)
        if configuration.inbound.ports.isEmpty {
            logger.warning("inbound.ports is empty: every inbound connection will be denied port_not_allowed")
        }
        logger.info(
            "inbound mTLS listener up",
            metadata: [
                "address": "\(inbound.localAddress!)",
                "identity": "\(environment.credentials.current.identity.map { "\($0)" } ?? "none")",
            ]
        )

        var routeAddresses: [SocketAddress] = []
        for route in configuration.routes {
            let rotation = EndpointRotation(route.endpoints)
            let listener = try await bootstrap { channel in
                try channel.pipeline.syncOperations.addHandler(
                    OutboundRouteHandler(route: route, rotation: rotation, environment: environment)
                )
            }.bind(host: route.listen.host, port: route.listen.port).get()
            listeners.withLockedValue { $0.append(listener) }
            environment.listenerPorts.insert(listener.localAddress!.port!)
            routeAddresses.append(listener.localAddress!)
            logger.info(
                "route listener up",
                metadata: [
                    "address": "\(listener.localAddress!)", "service": "\(route.service)", "port": "\(route.port)",
                    "endpoints": "\(route.endpoints.map { "\($0.address)=\($0.identity)" })",
                ]
            )
        }
        return BoundAddresses(inbound: inbound.localAddress!, routes: routeAddresses)
    }

    private func bootstrap(
        _ initialize: @escaping @Sendable (any Channel) throws -> Void
    ) -> ServerBootstrap {
        let tracker = environment.tracker
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: RelayChannelOptions.writeBufferWaterMark)
            .childChannelOption(.recvAllocator, value: RelayChannelOptions.receiveAllocator)
            .childChannelInitializer { channel in
                tracker.track(channel)
                return channel.eventLoop.makeCompletedFuture { try initialize(channel) }
            }
    }

    /// Stops accepting, lets live connections finish for up to `drain` seconds, cuts
    /// the rest, and stops the event loops.
    public func shutdown(drain: Double? = nil) async {
        let channels = listeners.withLockedValue { value in
            defer { value = [] }
            return value
        }
        for channel in channels { try? await channel.close() }
        let seconds = drain ?? configuration.timeouts.drain
        let live = environment.tracker.count
        logger.info("draining", metadata: ["connections": "\(live)", "deadline_seconds": "\(seconds)"])
        let cut = await environment.tracker.drain(deadline: .now + .milliseconds(Int64(seconds * 1000)))
        logger.info("drained", metadata: ["cut_at_deadline": "\(cut)"])
        try? await group.shutdownGracefully()
    }

    /// Runs until graceful shutdown (SIGTERM through the service group), reloading the
    /// credentials when their files change, then drains.
    public func run() async throws {
        _ = try await start()
        let credentials = environment.credentials
        let interval = configuration.identity.reloadInterval
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .milliseconds(Int64(interval * 1000)))
                    credentials.reloadIfChanged()
                }
            }
            try? await gracefulShutdown()
            tasks.cancelAll()
        }
        await shutdown()
    }
}
