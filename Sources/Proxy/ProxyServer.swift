import Logging
import MeshAPI
import MeshConfiguration
import MeshIdentity
import MeshNet
import MeshProcess
import MeshTLS
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import Policy
import Prometheus
import ServiceLifecycle
import Synchronization

/// Whether every listener is bound and the proxy is not draining (`GET /ready`).
private final class Readiness: Sendable {
    let ready = Atomic<Bool>(false)
}

/// The sidecar: the inbound mTLS listener, the outbound route listeners, the capture
/// listeners nftables redirects to, credential reloading, and a graceful drain on
/// shutdown.
///
/// `run()` makes it a swift-service-lifecycle `Service` (SIGTERM → graceful shutdown →
/// drain); tests drive `start()` and `shutdown()` directly.
public final class ProxyServer: Service, Sendable {
    /// The addresses actually bound (useful with port 0).
    public struct BoundAddresses: Sendable {
        public let inbound: SocketAddress
        /// One per route with a `listen` address, in configuration order.
        public let routes: [SocketAddress]
        /// The outbound capture listeners (`capture.outbound`), in configuration order.
        public let captureOutbound: [SocketAddress]
        /// The inbound plaintext capture listeners (`capture.inbound`).
        public let captureInbound: [SocketAddress]
        /// The admin API's TCP listener (`admin.listen`), if any.
        public let admin: SocketAddress?
        /// The Prometheus listener (`metrics.listen`), if any.
        public let metrics: SocketAddress?
        /// Mesh DNS (UDP; TCP is on the same port), one per `dns.listen` address.
        public let dns: [SocketAddress]
    }

    private let configuration: ProxyConfiguration
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let environment: ProxyEnvironment
    private let listeners = NIOLockedValueBox<[any Channel]>([])
    private let adminListeners = NIOLockedValueBox<[any Channel]>([])
    /// The inbound mTLS listener's count of connections not yet authenticated.
    private let admission: HandshakeAdmission
    private let aftermathTask = NIOLockedValueBox<RepeatedTask?>(nil)
    private let metrics: PrometheusCollectorRegistry?
    private let readiness = Readiness()

    /// Loads the credentials; throws when they are unusable.
    ///
    /// - Parameter metrics: the registry the process's swift-metrics backend writes to
    ///   (`MetricsSystem.bootstrap(PrometheusMetricsFactory(registry:))`), served on
    ///   `metrics.listen` and the admin API's `/metrics`; nil: no metrics endpoint.
    public init(configuration: ProxyConfiguration, logger: Logger, metrics: PrometheusCollectorRegistry? = nil) throws {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        let counters = ProxyMetrics()
        admission = HandshakeAdmission(
            limits: .init(
                total: configuration.inbound.maxUnauthenticated,
                perSource: configuration.inbound.maxUnauthenticatedPerSource
            ),
            metrics: counters
        )
        let credentials = try TLSCredentialsSource(
            paths: CredentialPaths(
                certificate: configuration.identity.certificate,
                privateKey: configuration.identity.privateKey,
                trustBundle: configuration.identity.trustBundle
            ),
            logger: logger
        )
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.workers)
        let discovery = try configuration.discovery.agent.map { agent in
            try MeshDiscovery(
                configuration: configuration.discovery,
                agent: agent,
                inbound: configuration.inbound,
                credentials: credentials,
                logger: logger
            )
        }
        let namespace = configuration.workload.namespace ?? credentials.current.identity?.namespace ?? "default"
        let policies = PolicyStore(
            directory: configuration.policies.directory,
            workload: Workload(namespace: namespace, labels: configuration.workload.labels),
            httpPorts: Set(configuration.policies.httpPorts),
            metrics: counters,
            logger: logger
        )
        self.environment = ProxyEnvironment(
            configuration: configuration,
            credentials: credentials,
            tracker: ConnectionTracker(),
            policies: policies,
            liveFlows: LiveFlows(metrics: counters),
            flows: FlowRecorder(capacity: configuration.flows.capacity, recording: configuration.flows.record),
            discovery: discovery,
            directRelays: configuration.relayEngine == .direct
                ? try DirectRelays(
                    count: configuration.workers,
                    idleTimeout: .seconds(configuration.timeouts.idle),
                    logger: logger
                ) : nil,
            logger: logger,
            metrics: counters
        )
        self.policyWatcher = PolicyWatcher(directory: configuration.policies.directory) { [environment] in
            if environment.policies.reload() {
                let revoked = environment.liveFlows.revoke(under: environment.policies.current)
                if revoked > 0 {
                    logger.warning("policy change revoked live flows", metadata: ["revoked": "\(revoked)"])
                }
            }
        }
    }

    private let policyWatcher: PolicyWatcher

    /// Errors of policy files whose current version is refused (their last good version
    /// is in force).
    public var policyErrors: [LocatedError] { environment.policies.errors }

    /// Inbound flows admitted by policy and still open.
    public var liveFlowCount: Int { environment.liveFlows.count }

    /// Relays running on the direct relay loops now.
    public var directRelayCount: Int { environment.directRelays?.count ?? 0 }

    /// Connections moved to the direct relay loops since start.
    public var directRelaysAdopted: Int { environment.directRelays?.adopted ?? 0 }

    /// Direct relays still in memory, running or not (for leak checks).
    public var directRelaysInMemory: Int { environment.directRelays?.inMemory ?? 0 }

    /// The identity source, so callers can trigger a reload check.
    public var credentials: TLSCredentialsSource { environment.credentials }

    /// Live downstream connections.
    public var activeConnections: Int { environment.tracker.count }

    /// Inbound mTLS connections that have not finished their handshake.
    public var unauthenticatedConnections: Int { admission.pending }

    /// Inbound mTLS connections accepted since start, admitted or not.
    public var inboundArrivals: UInt64 { admission.arrivals }

    /// Flows open now (zero when recording is off).
    public var openFlowCount: Int { environment.flows.openCount }

    /// Readers of `GET /flows?follow=1` connected now.
    public var flowFollowers: Int { environment.flows.followerCount }

    /// Loads the policies, starts watching them, and binds every listener.
    public func start() async throws -> BoundAddresses {
        let environment = self.environment
        environment.policies.reload()
        try policyWatcher.start()
        startFloodAftermath()
        let admission = self.admission
        let firstByte = TimeAmount.milliseconds(Int64(configuration.timeouts.firstByte * 1000))
        let inbound = try await bind(configuration.inbound.listen, direction: .inbound, admission: admission) {
            channel,
            flow,
            ticket in
            guard let ticket else { throw ChannelError.inappropriateOperationForState }  // always given here
            try channel.pipeline.syncOperations.addHandlers(
                FirstByteTimeout(timeout: firstByte, metrics: environment.metrics),
                MeshTLSHandler(
                    context: environment.credentials.current,
                    expectedPeer: nil,
                    handshakeTimeout: environment.handshakeTimeout,
                    logger: environment.logger
                ),
                HandshakeAdmitted(ticket: ticket),
                InboundPrefaceHandler(environment: environment, flow: flow)
            )
        }
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
        var rotations: [(ProxyConfiguration.Route, EndpointRotation)] = []
        for route in configuration.routes {
            let rotation = EndpointRotation(route.endpoints)
            rotations.append((route, rotation))
            guard let listen = route.listen else { continue }
            let listener = try await bind(listen, direction: .outbound) { channel, flow, _ in
                try channel.pipeline.syncOperations.addHandler(
                    OutboundRouteHandler(route: route, rotation: rotation, environment: environment, flow: flow)
                )
            }
            routeAddresses.append(listener.localAddress!)
            logger.info(
                "route listener up",
                metadata: [
                    "address": "\(listener.localAddress!)", "service": "\(route.service)", "port": "\(route.port)",
                    "endpoints": "\(route.endpoints.map { "\($0.address)=\($0.identity)" })",
                ]
            )
        }

        let captureRoutes = CaptureRoutes(rotations)
        var captureOutbound: [SocketAddress] = []
        for address in configuration.capture.outbound {
            let listener = try await bind(address, direction: .outbound, ipv6Only: true) { channel, flow, _ in
                try channel.pipeline.syncOperations.addHandler(
                    CapturedOutboundHandler(routes: captureRoutes, environment: environment, flow: flow)
                )
            }
            captureOutbound.append(listener.localAddress!)
            logger.info("outbound capture listener up", metadata: ["address": "\(listener.localAddress!)"])
        }
        var captureInbound: [SocketAddress] = []
        for address in configuration.capture.inbound {
            let listener = try await bind(address, direction: .inbound, ipv6Only: true) { channel, flow, _ in
                try channel.pipeline.syncOperations.addHandler(
                    PlaintextInboundHandler(environment: environment, flow: flow)
                )
            }
            captureInbound.append(listener.localAddress!)
            logger.info("inbound plaintext capture listener up", metadata: ["address": "\(listener.localAddress!)"])
        }
        var dns: [SocketAddress] = []
        if let discovery = environment.discovery {
            discovery.start(on: group.next(), workloadSocket: configuration.workloadAPI.socket)
            let server = MeshDNSServer(
                discovery: discovery,
                configuration: configuration.dns,
                metrics: environment.metrics,
                logger: logger
            )
            let channels = try await server.start(group: group, listen: configuration.dnsListeners)
            listeners.withLockedValue { $0 += channels }
            dns = channels.enumerated().filter { $0.offset % 2 == 0 }.compactMap { $0.element.localAddress }
        }
        if let listen = configuration.workloadAPI.listen, let socket = configuration.workloadAPI.socket {
            let listener = try await WorkloadAPIRelay.bootstrap(
                group: group,
                socket: socket,
                environment: environment,
                logger: logger
            )
            .bind(host: listen.host, port: listen.port).get()
            listeners.withLockedValue { $0.append(listener) }
            environment.listenerPorts.insert(listener.localAddress!.port!)
            logger.info(
                "workload API up",
                metadata: ["address": "\(listener.localAddress!)", "agent": "\(socket)"]
            )
        }
        let (admin, metricsAddress) = try await startAdmin()
        readiness.ready.store(true, ordering: .relaxed)
        return BoundAddresses(
            inbound: inbound.localAddress!,
            routes: routeAddresses,
            captureOutbound: captureOutbound,
            captureInbound: captureInbound,
            admin: admin,
            metrics: metricsAddress,
            dns: dns
        )
    }

    /// The admin API (TCP and unix socket) and the metrics listener.
    private func startAdmin() async throws -> (admin: SocketAddress?, metrics: SocketAddress?) {
        let readiness = self.readiness
        let api = AdminAPI(environment: environment, metrics: metrics) { readiness.ready.load(ordering: .relaxed) }
        var admin: SocketAddress?
        if let listen = configuration.admin.listen {
            let listener = try await adminBootstrap(api, scope: .admin, limit: AdminConnections())
                .bind(host: listen.host, port: listen.port).get()
            adminListeners.withLockedValue { $0.append(listener) }
            admin = listener.localAddress
            logger.info("admin API up", metadata: ["address": "\(listener.localAddress!)"])
        }
        if let path = configuration.admin.socket {
            try AdminSocket.prepare(path)
            // The socket is the agent's (0660, the sidecar's group; no app container
            // mounts it): not capped, so an app's connections never lock the agent out.
            let listener = try await adminBootstrap(api, scope: .admin, limit: nil).bind(unixDomainSocketPath: path)
                .get()
            adminListeners.withLockedValue { $0.append(listener) }
            chmod(path, 0o660)
            logger.info("admin API up", metadata: ["socket": "\(path)"])
        }
        var metricsAddress: SocketAddress?
        if let listen = configuration.metrics.listen, metrics != nil {
            let listener = try await adminBootstrap(api, scope: .metrics, limit: AdminConnections())
                .bind(host: listen.host, port: listen.port)
                .get()
            adminListeners.withLockedValue { $0.append(listener) }
            metricsAddress = listener.localAddress
            logger.info("metrics up", metadata: ["address": "\(listener.localAddress!)/metrics"])
        }
        return (admin, metricsAddress)
    }

    /// The admin and metrics listeners: on TCP (which the app reaches) at most
    /// `AdminLimits.maximumConnections` open on each, of which at most
    /// `AdminLimits.maximumFollowers` follow flows; everywhere, a connection that sends
    /// no request for `AdminLimits.requestTimeout` is closed.
    private func adminBootstrap(_ api: AdminAPI, scope: AdminHandler.Scope, limit: AdminConnections?)
        -> ServerBootstrap
    {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                guard limit?.admit(channel) ?? true else {
                    api.environment.metrics.adminClosed("cap")
                    channel.close(promise: nil)
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        IdleStateHandler(readTimeout: AdminLimits.requestTimeout)
                    )
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(api: api, scope: scope, limit: limit))
                }
            }
    }

    /// Trims the allocator once a flood of unauthenticated connections is over.
    private func startFloodAftermath() {
        let admission = self.admission
        let logger = self.logger
        let watch = NIOLockedValueBox(FloodAftermath())
        let task = group.next().scheduleRepeatedTask(
            initialDelay: FloodAftermath.interval,
            delay: FloodAftermath.interval
        ) {
            _ in
            guard watch.withLockedValue({ $0.observe(arrivals: admission.arrivals) }) else { return }
            // On a thread of its own: trimming a large heap can take milliseconds that
            // this event loop's connections would wait.
            _ = try? SystemThread.start(name: "beemesh-trim") {
                _ = glibcMallocTrim(0)
                logger.debug("flood of unauthenticated connections over; memory trimmed")
            }
        }
        aftermathTask.withLockedValue { $0 = task }
    }

    /// Binds one listener and records it (for shutdown and the port checks); every
    /// connection it accepts gets a flow in the flow table.
    private func bind(
        _ address: HostPort,
        direction: FlowRecord.Direction,
        ipv6Only: Bool = false,
        admission: HandshakeAdmission? = nil,
        _ initialize: @escaping @Sendable (any Channel, Flow?, HandshakeAdmission.Ticket?) throws -> Void
    ) async throws -> any Channel {
        var bootstrap = bootstrap(direction: direction, admission: admission, initialize)
        if ipv6Only, address.host.contains(":") {
            // Capture listeners come in pairs, `0.0.0.0:P` and `[::]:P`: the IPv6 one
            // takes IPv6 only.
            bootstrap = bootstrap.serverChannelOption(
                ChannelOptions.Types.SocketOption(level: .init(IPPROTO_IPV6), name: .init(IPV6_V6ONLY)),
                value: 1
            )
        }
        let listener = try await bootstrap.bind(host: address.host, port: address.port).get()
        listeners.withLockedValue { $0.append(listener) }
        environment.listenerPorts.insert(listener.localAddress!.port!)
        return listener
    }

    /// With `admission`, a connection over its caps is closed at once: no flow, no
    /// tracking, nothing else made for it (counted in
    /// `beemesh_inbound_connections_total{result="unauthenticated_cap|unauthenticated_source_cap"}`).
    private func bootstrap(
        direction: FlowRecord.Direction,
        admission: HandshakeAdmission? = nil,
        _ initialize: @escaping @Sendable (any Channel, Flow?, HandshakeAdmission.Ticket?) throws -> Void
    ) -> ServerBootstrap {
        let tracker = environment.tracker
        let flows = environment.flows
        let metrics = environment.metrics
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.writeBufferWaterMark, value: RelayChannelOptions.writeBufferWaterMark)
            .childChannelOption(.recvAllocator, value: RelayChannelOptions.receiveAllocator)
            .childChannelInitializer { channel in
                var ticket: HandshakeAdmission.Ticket?
                if let admission {
                    let source = HandshakeAdmission.sourceKey(channel.remoteAddress)
                    switch admission.admit(source, evict: { channel.close(promise: nil) }) {
                    case .success(let admitted):
                        ticket = admitted
                        channel.closeFuture.whenComplete { _ in admitted.release() }
                    case .failure(let refusal):
                        metrics.inbound(refusal.rawValue)
                        channel.close(promise: nil)
                        return channel.eventLoop.makeSucceededVoidFuture()
                    }
                }
                tracker.track(channel)
                let flow = flows.open(channel, direction: direction)
                return channel.eventLoop.makeCompletedFuture { try initialize(channel, flow, ticket) }
            }
    }

    /// Stops accepting, lets live connections finish for up to `drain` seconds, cuts
    /// the rest, and stops the event loops.
    public func shutdown(drain: Double? = nil) async {
        readiness.ready.store(false, ordering: .relaxed)
        let channels = listeners.withLockedValue { value in
            defer { value = [] }
            return value
        }
        for channel in channels { try? await channel.close() }
        aftermathTask.withLockedValue { $0?.cancel() }
        policyWatcher.stop()
        await environment.discovery?.stop()
        let seconds = drain ?? configuration.timeouts.drain
        let live = environment.tracker.count
        logger.info("draining", metadata: ["connections": "\(live)", "deadline_seconds": "\(seconds)"])
        let flows = environment.flows
        let cut = await environment.tracker.drain(deadline: .now + .milliseconds(Int64(seconds * 1000))) {
            flows.markDraining()
        }
        logger.info("drained", metadata: ["cut_at_deadline": "\(cut)"])
        // The admin API stays up through the drain, so the flows it ends are visible.
        let admin = adminListeners.withLockedValue { value in
            defer { value = [] }
            return value
        }
        for channel in admin { try? await channel.close() }
        if let path = configuration.admin.socket { unlink(path) }
        await environment.directRelays?.stop()
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
