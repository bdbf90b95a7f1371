import Foundation
import Kademlia
import Logging
import MeshAPI
import MeshIdentity
import MeshTLS
import Metrics
import NIOCore
import NIOPosix

/// Runs the Kademlia state machine for real: its directives become messages on the
/// transport, timers on the event loop, and completed lookups and publishes.
///
/// The clock is the wall clock in nanoseconds since 1970, which record expiries also use.
/// Everything happens on one event loop; the public methods hop onto it.
public final class DHTService: @unchecked Sendable {
    public let identity: NodeIdentity
    private let configuration: AgentConfiguration.DHT
    private let loop: any EventLoop
    private let transport: DHTTransport
    private let logger: Logger
    private var node: KademliaNode
    private var lookups: [UInt64: EventLoopPromise<LookupResult>] = [:]
    private var publishes: [NodeID: [EventLoopPromise<Int>]] = [:]
    private var wake: (at: UInt64, task: Scheduled<Void>)?
    private var joined = false
    private var reportedRejections: [String: Int] = [:]
    /// Where records published through this agent are kept, so that a restarted agent
    /// stores them again at once instead of waiting for their sidecars to republish.
    private let recordDirectory: String?
    /// The agent's counters (`AgentServer` hands the API the same table).
    let metrics: AgentMetrics

    /// Retry interval for bootstrap peers while none answers.
    static let bootstrapRetry: TimeAmount = .seconds(2)

    public init(
        identity: NodeIdentity,
        configuration: AgentConfiguration.DHT,
        loop: any EventLoop,
        logger: Logger,
        recordDirectory: String? = nil,
        metrics: AgentMetrics = AgentMetrics()
    ) throws {
        self.metrics = metrics
        self.identity = identity
        self.recordDirectory = recordDirectory
        self.configuration = configuration
        self.loop = loop
        self.logger = logger
        let tls = try TLSContext(credentials: identity.credentials)
        self.transport = DHTTransport(
            loop: loop,
            tls: tls,
            requestTimeout: .nanoseconds(Int64(configuration.requestTimeout * 1e9)),
            metrics: metrics,
            logger: logger
        )
        var settings = KademliaNode.Configuration()
        settings.requestTimeout = UInt64(configuration.requestTimeout * 1e9)
        settings.maintenanceInterval = UInt64(configuration.maintenanceInterval * 1e9)
        let bundle = identity.credentials.bundle
        node = KademliaNode(
            contact: Contact(id: identity.id, address: configuration.advertised.description),
            configuration: settings,
            seed: UInt64.random(in: .min ... .max),
            validator: ServiceRecordValidator(bundle: bundle)
        )
    }

    @Sendable public static func now() -> UInt64 { ServiceRecordValidator.wallClock() }

    /// Binds the listener and joins through the bootstrap peers (retrying until one
    /// answers). Returns once the listener is bound.
    public func start() -> EventLoopFuture<Void> {
        loop.flatSubmit {
            self.transport.listen(on: self.configuration.listen) { envelope in
                self.apply(self.node.receive(envelope, now: Self.now()))
                self.reportRejections()
            }.map { channel in
                self.logger.info(
                    "DHT node listening",
                    metadata: [
                        "node": "\(self.identity.id)", "identity": "\(self.identity.spiffeID)",
                        "listen": "\(channel.localAddress?.description ?? "?")",
                        "advertise": "\(self.configuration.advertised)",
                    ]
                )
                self.join()
            }
        }
    }

    public func stop() -> EventLoopFuture<Void> {
        loop.flatSubmit {
            self.wake?.task.cancel()
            self.wake = nil
            return self.transport.close()
        }
    }

    /// Looks `key` up: the newest valid record of every publisher under it.
    public func findValue(_ key: NodeID) -> EventLoopFuture<LookupResult> {
        loop.flatSubmit {
            let (id, directives) = self.node.findValue(key, now: Self.now())
            let promise = self.loop.makePromise(of: LookupResult.self)
            self.lookups[id] = promise
            self.apply(directives)
            return promise.futureResult
        }
    }

    /// Stores `record` on the nodes closest to its key; the answer is how many took it.
    public func publish(_ record: Record) -> EventLoopFuture<Int> {
        keep(record)
        return loop.flatSubmit {
            let promise = self.loop.makePromise(of: Int.self)
            self.publishes[record.key, default: []].append(promise)
            self.apply(self.node.put(record, now: Self.now()))
            return promise.futureResult
        }
    }

    /// The routing table and what this node holds, for `beectl dht peers`.
    public func peers() -> EventLoopFuture<DHTPeers> {
        loop.submit {
            let own = self.identity.id
            let contacts = self.node.table.contacts.sorted { ($0.id ^ own) < ($1.id ^ own) }
            return DHTPeers(
                node: own.description,
                address: self.configuration.advertised.description,
                identity: self.identity.spiffeID.description,
                peers: contacts.map { contact in
                    DHTPeers.Peer(
                        id: contact.id.description,
                        address: contact.address,
                        bucket: (contact.id ^ own).leadingZeroBitCount
                    )
                },
                records: self.node.heldRecordCount(now: Self.now())
            )
        }
    }

    // MARK: records kept across restarts

    private func file(for record: Record) -> String? {
        recordDirectory.map { "\($0)/\(record.key.bytes.hexString)-\(record.publisher.bytes.hexString).record" }
    }

    private func keep(_ record: Record) {
        guard let path = file(for: record) else { return }
        try? FileManager.default.createDirectory(atPath: recordDirectory!, withIntermediateDirectories: true)
        try? PEMFile.write(path, bytes: record.value, mode: 0o600)
    }

    /// The kept records that have not expired (expired ones are deleted).
    private func keptRecords() -> [Record] {
        guard let recordDirectory else { return [] }
        let files = (try? FileManager.default.contentsOfDirectory(atPath: recordDirectory)) ?? []
        var records: [Record] = []
        for name in files where name.hasSuffix(".record") {
            let path = recordDirectory + "/" + name
            guard let data = FileManager.default.contents(atPath: path),
                let record = try? SignedServiceRecord(decoding: Array(data)).dhtRecord,
                record.expires > Self.now()
            else {
                unlink(path)
                continue
            }
            records.append(record)
        }
        return records
    }

    // MARK: driving the state machine

    private func join() {
        let seeds = configuration.bootstrap.map(\.description).filter { $0 != configuration.advertised.description }
        guard !seeds.isEmpty else {
            joined = true
            apply(node.bootstrap(seeds: [], now: Self.now()))
            republishKept()
            return
        }
        let identified = seeds.map { address in
            transport.identify(address).map { Optional(Contact(id: $0, address: address)) }.recover { _ in nil }
        }
        EventLoopFuture.whenAllSucceed(identified, on: loop).whenSuccess { found in
            let contacts = found.compactMap { $0 }
            guard !contacts.isEmpty else {
                self.logger.warning("no bootstrap peer answers; retrying", metadata: ["peers": "\(seeds)"])
                self.loop.scheduleTask(in: Self.bootstrapRetry) { self.join() }
                return
            }
            self.joined = true
            self.logger.info("joined the DHT", metadata: ["through": "\(contacts.map(\.address))"])
            self.apply(self.node.bootstrap(seeds: contacts, now: Self.now()))
            self.republishKept()
        }
    }

    private func republishKept() {
        let records = keptRecords()
        guard !records.isEmpty else { return }
        logger.info("storing the records kept from before the restart", metadata: ["records": "\(records.count)"])
        for record in records { apply(node.put(record, now: Self.now())) }
    }

    private func apply(_ directives: [KademliaNode.Directive]) {
        for directive in directives {
            switch directive {
            case .send(let envelope, let contact):
                transport.send(envelope, to: contact)
            case .wake(let at):
                schedule(at)
            case .finished(let lookup, let result):
                lookups.removeValue(forKey: lookup)?.succeed(result)
            case .published(let key, let replicas):
                for promise in publishes.removeValue(forKey: key) ?? [] { promise.succeed(replicas) }
            }
        }
    }

    /// One timer, at the earliest time the state machine asked to be woken.
    private func schedule(_ at: UInt64) {
        if let wake, wake.at <= at { return }
        wake?.task.cancel()
        let delay = Int64(at) - Int64(Self.now())
        let task = loop.scheduleTask(in: .nanoseconds(max(delay, 0) + 1_000_000)) {
            self.wake = nil
            self.apply(self.node.tick(now: Self.now()))
        }
        wake = (at, task)
    }

    /// Rejections the state machine counted, as metrics (the difference since last time).
    private func reportRejections() {
        let current = node.rejected
        guard current != reportedRejections else { return }
        for (reason, count) in current {
            let new = count - reportedRejections[reason, default: 0]
            if new > 0 {
                metrics.dhtRejected(reason, count: new)
            }
        }
        reportedRejections = current
    }
}

extension Array where Element == UInt8 {
    var hexString: String { map { String(format: "%02x", $0) }.joined() }
}
