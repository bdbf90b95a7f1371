import Kademlia
import Logging
import MeshAPI
import MeshConfiguration
import MeshIdentity
import MeshProcess
import MeshTLS
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Service discovery through the node agent: this workload's signed service record
/// published into the DHT (and republished before it expires), the endpoints of other
/// services looked up and cached, and the virtual IPs mesh DNS hands out.
///
/// The agent is asked over its local API with a blocking client on a one-thread pool,
/// never on an event loop. Every record it returns is verified again here against this
/// sidecar's own trust bundle: a compromised agent cannot redirect traffic either.
final class MeshDiscovery: Sendable {
    /// One service's endpoints as last looked up, and the rotation per app port.
    struct Resolution: Sendable {
        /// `expires`: the record's expiry, seconds since 1970.
        let endpoints: [(endpoint: ProxyConfiguration.Endpoint, ports: [UInt16], expires: Double)]
        let rotations: [UInt16: EndpointRotation]
        let freshUntil: NIODeadline

        init(
            endpoints: [(endpoint: ProxyConfiguration.Endpoint, ports: [UInt16], expires: Double)],
            freshUntil: NIODeadline
        ) {
            self.endpoints = endpoints
            var byPort: [UInt16: [ProxyConfiguration.Endpoint]] = [:]
            for (endpoint, ports, _) in endpoints {
                for port in ports { byPort[port, default: []].append(endpoint) }
            }
            rotations = byPort.mapValues(EndpointRotation.init)
            self.freshUntil = freshUntil
        }

        /// The rotation over the endpoints that serve `port` (nil: none does).
        func rotation(for port: UInt16) -> EndpointRotation? { rotations[port] }

        /// This answer without the endpoints whose records expired by `now`; nil when
        /// none is left (a stale answer is not worth using then).
        func unexpired(at now: Double) -> Resolution? {
            let live = endpoints.filter { $0.expires > now }
            guard !live.isEmpty else { return nil }
            return live.count == endpoints.count ? self : Resolution(endpoints: live, freshUntil: freshUntil)
        }
    }

    let configuration: ProxyConfiguration.Discovery
    private let client: AdminClient
    private let pool = NIOThreadPool(numberOfThreads: 1)
    /// The leadership poll's own thread: a lookup waiting on the agent must not hold up
    /// the renewal of a 6 s leader record.
    private let leaderPool = NIOThreadPool(numberOfThreads: 1)
    private let credentials: TLSCredentialsSource
    private let logger: Logger
    /// `beemesh_dht_publish_total` and `beemesh_dht_lookups_total` by result, and
    /// `beemesh_dht_records_rejected_total` by reason, made once.
    private let published = Counter(label: "beemesh_dht_publish_total", dimensions: [("result", "ok")])
    private let publishFailed = Counter(label: "beemesh_dht_publish_total", dimensions: [("result", "failed")])
    private let resolved = Counter(label: "beemesh_dht_lookups_total", dimensions: [("result", "ok")])
    private let resolveFailed = Counter(label: "beemesh_dht_lookups_total", dimensions: [("result", "failed")])
    private let recordsRejected = CounterFamily(
        "beemesh_dht_records_rejected_total",
        by: "reason",
        codes: ServiceRecordError.Code.self
    )
    private let cache = NIOLockedValueBox<[String: Resolution]>([:])
    /// Services whose stale answer a background lookup is refreshing.
    private let refreshing = NIOLockedValueBox<Set<String>>([])
    private let vips = NIOLockedValueBox(VirtualIPs())
    private let publishTask = NIOLockedValueBox<RepeatedTask?>(nil)
    private let leaderTask = NIOLockedValueBox<RepeatedTask?>(nil)
    /// Whether this pod's `leader.` record is out, and when it was last published.
    private let leading = NIOLockedValueBox<(published: Bool, at: Double)>((false, 0))
    private let inbound: ProxyConfiguration.Inbound

    init(
        configuration: ProxyConfiguration.Discovery,
        agent: String,
        inbound: ProxyConfiguration.Inbound,
        credentials: TLSCredentialsSource,
        logger: Logger
    ) throws {
        self.configuration = configuration
        self.client = AdminClient(endpoint: try AdminClient.Endpoint(agent), timeout: 5)
        self.inbound = inbound
        self.credentials = credentials
        self.logger = logger
    }

    /// Publishes this pod's record; with `workloadSocket` (a StatefulSet's pod), also
    /// its `leader.` record while the pod leads its workload.
    func start(on loop: any EventLoop, workloadSocket: String? = nil) {
        pool.start()
        guard let publish = configuration.publish else { return }
        let interval = TimeAmount.seconds(publish.ttl / 3)
        let task = loop.scheduleRepeatedAsyncTask(initialDelay: .zero, delay: interval) { _ in
            self.publishOnce(publish, on: loop)
        }
        publishTask.withLockedValue { $0 = task }
        guard let workloadSocket else { return }
        leaderPool.start()
        let leader = loop.scheduleRepeatedAsyncTask(initialDelay: .zero, delay: Self.leaderPoll) { _ in
            self.publishLeadership(publish, workloadSocket: workloadSocket, on: loop)
        }
        leaderTask.withLockedValue { $0 = leader }
    }

    func stop() async {
        for box in [publishTask, leaderTask] {
            box.withLockedValue { task in
                task?.cancel()
                task = nil
            }
        }
        try? await pool.shutdownGracefully()
        try? await leaderPool.shutdownGracefully()
    }

    // MARK: publishing

    /// How often a StatefulSet pod's sidecar asks its workload API whether the pod
    /// leads, and how long its `leader.` record lives (it is published again every
    /// third of that while the pod leads): a leader that vanishes without withdrawing
    /// its record (its node cut off) is forgotten within it.
    static let leaderPoll = TimeAmount.seconds(Int64(1))
    static let leaderTTL = 6.0
    /// A withdrawn `leader.` record: published again with no port (a tombstone, which
    /// no client dials) and this short a life.
    static let withdrawnTTL = 2.0

    /// While the pod leads its workload (`GET /v1/leader` on its workload socket says
    /// so), its record is also published as `leader.<name>.<namespace>`, which mesh DNS
    /// resolves as `leader.<name>.<namespace>.mesh`; once it no longer does (or the
    /// group cannot say), the record is withdrawn: published again to expire at once.
    private func publishLeadership(
        _ publish: ProxyConfiguration.Publish,
        workloadSocket: String,
        on loop: any EventLoop
    ) -> EventLoopFuture<Void> {
        leaderPool.runIfActive(eventLoop: loop) { () -> Bool in
            let answer = try AdminClient(endpoint: .unix(path: workloadSocket), timeout: 2)
                .get("/v1/leader", as: WorkloadAPI.Leader.self)
            return answer.isSelf
        }.recover { _ in false }.flatMap { leads in
            let now = Date().timeIntervalSince1970
            let (published, at) = self.leading.withLockedValue { ($0.published, $0.at) }
            if leads, !published || now - at >= Self.leaderTTL / 3 {
                self.leading.withLockedValue { $0 = (true, now) }
                return self.publishOnce(publish, leader: true, ttl: Self.leaderTTL, through: self.leaderPool, on: loop)
            }
            if !leads, published {
                self.leading.withLockedValue { $0 = (false, now) }
                self.logger.info("this pod no longer leads: its leader record is withdrawn")
                return self.publishOnce(
                    publish,
                    leader: true,
                    ttl: Self.withdrawnTTL,
                    withdrawn: true,
                    through: self.leaderPool,
                    on: loop
                )
            }
            return loop.makeSucceededVoidFuture()
        }
    }

    /// Signs a fresh record (sequence: the wall clock in milliseconds, so that a restarted
    /// sidecar's record replaces its predecessor's) and stores it through the agent.
    /// `leader`: the record under `leader.<name>` instead.
    private func publishOnce(
        _ publish: ProxyConfiguration.Publish,
        leader: Bool = false,
        ttl: Double? = nil,
        withdrawn: Bool = false,
        through pool: NIOThreadPool? = nil,
        on loop: any EventLoop
    ) -> EventLoopFuture<Void> {
        let pool = pool ?? self.pool
        let parts = publish.service.split(separator: ".", maxSplits: 1).map(String.init)
        let context = credentials.current
        let now = Date().timeIntervalSince1970
        let record = ServiceRecord(
            service: leader ? ServiceRecord.leaderPrefix + parts[0] : parts[0],
            namespace: parts[1],
            endpoint: (publish.endpoint ?? inbound.listen).description,
            ports: withdrawn ? [] : publish.ports.isEmpty ? inbound.ports : publish.ports,
            spiffeID: context.identity?.description ?? "",
            weight: publish.weight,
            sequence: UInt64(now * 1000),
            expires: UInt64((now + (ttl ?? publish.ttl)) * 1e9)
        )
        let client = self.client
        let logger = self.logger
        let (published, publishFailed) = (self.published, self.publishFailed)
        return pool.runIfActive(eventLoop: loop) {
            let signed = try SignedServiceRecord.sign(record, with: context.credentials)
            let body = try MeshJSON.encoder().encode(
                PublishRequest(record: Data(signed.dhtRecord.value).base64EncodedString())
            )
            let (status, answer) = try client.send("PUT", "/dht/records", body: Array(body))
            guard status == 200 else { throw AdminClientError(status: status, body: answer) }
            return try MeshJSON.decoder().decode(PublishResult.self, from: Data(answer))
        }.map { result in
            published.increment()
            logger.debug(
                "service record published",
                metadata: ["service": "\(publish.service)", "replicas": "\(result.replicas)"]
            )
        }.recover { error in
            publishFailed.increment()
            logger.warning(
                "cannot publish the service record",
                metadata: ["service": "\(publish.service)", "error": "\(error)"]
            )
        }
    }

    // MARK: resolving

    /// The endpoints of `service` (`name.namespace`): from the cache while fresh. A
    /// stale answer's endpoints whose records have not expired are used at once while
    /// one lookup through the agent refreshes it in the background (a lookup waits on
    /// silent DHT nodes, up to the agent's request timeout, and no connection or DNS
    /// answer should). A service never resolved, or whose stale answer has no live
    /// endpoint left (none had published yet, or all expired), waits for its lookup;
    /// if the agent cannot answer that, the last answer is used.
    func resolve(_ service: String, on loop: any EventLoop) -> EventLoopFuture<Resolution> {
        let cached = cache.withLockedValue { $0[service] }
        if let cached, cached.freshUntil > NIODeadline.now() { return loop.makeSucceededFuture(cached) }
        guard let stale = cached?.unexpired(at: Date().timeIntervalSince1970) else {
            return lookUp(service, on: loop).flatMapError { error in
                cached.map { loop.makeSucceededFuture($0) } ?? loop.makeFailedFuture(error)
            }
        }
        if refreshing.withLockedValue({ $0.insert(service).inserted }) {
            lookUp(service, on: loop).whenComplete { _ in
                _ = self.refreshing.withLockedValue { $0.remove(service) }
            }
        }
        return loop.makeSucceededFuture(stale)
    }

    /// Looks `service` up through the agent and caches the verified answer.
    private func lookUp(_ service: String, on loop: any EventLoop) -> EventLoopFuture<Resolution> {
        let client = self.client
        let bundle = credentials.current.credentials.bundle
        let cacheTTL = configuration.cacheTTL
        let logger = self.logger
        let (resolved, resolveFailed, rejected) = (self.resolved, self.resolveFailed, self.recordsRejected)
        return pool.runIfActive(eventLoop: loop) {
            try client.get("/dht/services/\(service)", as: ServiceLookup.self)
        }.map { lookup in
            let resolution = Self.verify(lookup, bundle: bundle, cacheTTL: cacheTTL, rejected: rejected, logger: logger)
            self.cache.withLockedValue { $0[service] = resolution }
            resolved.increment()
            return resolution
        }.flatMapErrorThrowing { error in
            resolveFailed.increment()
            logger.warning("service lookup failed", metadata: ["service": "\(service)", "error": "\(error)"])
            throw error
        }
    }

    /// The endpoints whose records verify against `bundle`; the rest are counted (in
    /// `rejected`, by reason) and dropped.
    static func verify(
        _ lookup: ServiceLookup,
        bundle: TrustBundle,
        cacheTTL: Double,
        rejected: CounterFamily? = nil,
        logger: Logger
    ) -> Resolution {
        let validator = ServiceRecordValidator(bundle: bundle)
        var endpoints: [(endpoint: ProxyConfiguration.Endpoint, ports: [UInt16], expires: Double)] = []
        var earliestExpiry = Double.infinity
        for endpoint in lookup.endpoints {
            do throws(ServiceRecordError) {
                guard let value = Data(base64Encoded: endpoint.record) else {
                    throw ServiceRecordError(.malformed, "record is not base64")
                }
                let service = try validator.check(try SignedServiceRecord(decoding: Array(value)).dhtRecord)
                // A withdrawn record (a former leader's tombstone) serves nothing.
                if service.ports.isEmpty { continue }
                guard let address = HostPort(service.endpoint), let identity = try? SpiffeID(service.spiffeID)
                else {
                    throw ServiceRecordError(.malformed, "endpoint or identity unreadable")
                }
                let expires = Double(service.expires) / 1e9
                endpoints.append(
                    (ProxyConfiguration.Endpoint(address: address, identity: identity), service.ports, expires)
                )
                earliestExpiry = min(earliestExpiry, expires)
            } catch {
                rejected?.increment(error.code.rawValue)
                logger.warning(
                    "service record refused",
                    metadata: ["service": "\(lookup.service)", "endpoint": "\(endpoint.endpoint)", "error": "\(error)"]
                )
            }
        }
        let untilExpiry = earliestExpiry - Date().timeIntervalSince1970
        let fresh = max(0, min(cacheTTL, untilExpiry))
        return Resolution(endpoints: endpoints, freshUntil: .now() + .seconds(fresh))
    }

    // MARK: virtual IPs

    /// The virtual addresses of `service`, allocated on first use.
    func virtualAddresses(for service: String) -> (v4: [UInt8], v6: [UInt8]) {
        vips.withLockedValue { $0.addresses(for: service) }
    }

    /// The service a virtual address stands for (4 or 16 bytes).
    func service(atVirtual address: [UInt8]) -> String? {
        vips.withLockedValue { $0.service(at: address) }
    }
}
