import Foundation
import Kademlia
import Logging
import MeshAPI
import MeshConfiguration
import MeshIdentity
import NIOCore
import NIOPosix
import Raft
import RaftHost
import RaftPersistence

/// The Raft groups of the StatefulSets this node runs: one group per StatefulSet
/// (`namespace/name`), in `<state>/raft/<namespace>/<name>`, on an event loop of its
/// own (a group's fdatasync must not hold up the DHT or the API).
///
/// The reconciler keeps them in step with the desired state at each pass:
/// - `ensure` opens the group of every StatefulSet this node runs and removes, with
///   its data, the group of one that was deleted; it claims the ordinals this node is
///   to run, and says which of them it may start (those it holds: an ordinal never
///   runs on two nodes at once);
/// - `report` tells each group which of this node's ordinals are ready, and releases
///   the claims of those whose pods are gone (not merely no longer desired). The group's leader elects the workload's leader among
///   the ready ones (`RaftGroupHost`).
///
/// A group's members are the agents whose nodes run the StatefulSet (each applied it).
/// With `raft.listen` set, an agent says so in the DHT (a record under
/// `<name>.raft` in the namespace, signed by its node identity, naming where it
/// listens), and a node that opens a group it holds no data of looks that up first:
/// if other nodes host the group, it joins theirs (`RaftControl.join`, added as a
/// learner and promoted once caught up) instead of starting one of its own. Ordinals
/// are spread: a node claims while it holds fewer than its share (replicas over
/// members, rounded up) and gives up, pod first, what it holds beyond its share.
/// Without `raft.listen`, a group has this agent alone.
final class RaftGroups: @unchecked Sendable {
    private let loopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let loop: any EventLoop
    let transport: RaftTransport
    private let configuration: AgentConfiguration.Raft
    private let directory: String
    private let node: String
    private let logger: Logger
    /// By `namespace/name` (the loop's).
    private var hosts: [String: RaftGroupHost] = [:]
    /// Members other nodes said they are, by group, from the DHT (the loop's).
    private var discovered: [String: [RaftID: HostPort]] = [:]
    /// When this node's record for each group was last published (the loop's).
    private var published: [String: UInt64] = [:]
    private let dht: DHTService?
    private let credentials: WorkloadCredentials
    private let spiffeID: String
    /// Where other agents reach this one's Raft listener (nil: it does not listen).
    let advertise: HostPort?
    /// Whether the DHT is to be asked before a group is started here (it has peers).
    private let bootstraps: Bool
    private var maintenance: RepeatedTask?

    /// A member record lives this long and is published again every third of it.
    static let recordTTL: UInt64 = 30_000_000_000

    init(configuration: AgentConfiguration, identity: NodeIdentity, dht: DHTService?, logger: Logger) throws {
        loop = loopGroup.next()
        transport = try RaftTransport(loop: loop, credentials: identity.credentials, logger: logger)
        self.configuration = configuration.raft
        directory = configuration.node.stateDirectory + "/raft"
        node = configuration.node.name
        self.logger = logger
        self.dht = dht
        credentials = identity.credentials
        spiffeID = identity.spiffeID.description
        bootstraps = !configuration.dht.bootstrap.isEmpty
        advertise = configuration.raft.listen.map { listen in
            ["0.0.0.0", "::", ""].contains(listen.host)
                ? HostPort(host: configuration.dht.advertised.host, port: listen.port) : listen
        }
    }

    func start() async throws {
        guard let listen = configuration.listen else { return }
        let channel = try await loop.flatSubmit { self.transport.listen(on: listen) }.get()
        logger.info(
            "Raft listening",
            metadata: [
                "listen": "\(channel.localAddress?.description ?? "?")",
                "advertise": "\(advertise?.description ?? "?")",
            ]
        )
        maintenance = loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { _ in
            self.maintain()
        }
    }

    func stop() async {
        try? await loop.flatSubmit {
            self.maintenance?.cancel()
            for host in self.hosts.values { host.stop() }
            return self.transport.close()
        }.get()
        try? await loopGroup.shutdownGracefully()
    }

    /// The group of StatefulSet `namespace/name`, if this node hosts it.
    func host(_ group: String) -> EventLoopFuture<RaftGroupHost?> {
        loop.submit { self.hosts[group] }
    }

    var statuses: EventLoopFuture<[RaftGroupStatus]> {
        loop.submit { self.hosts.keys.sorted().map { self.hosts[$0]!.status(node: self.node) } }
    }

    // MARK: from the reconciler (its thread; each call waits for the loop)

    /// Who holds an ordinal, as this node's group knows it.
    enum Holder: Equatable {
        /// This node: it may run the ordinal's pod.
        case here
        /// Another node: this one must not run it.
        case elsewhere(String)
        /// Not known (the group is not open, or the claim was not decided yet): a pod
        /// that runs may go on, none is started.
        case unknown
    }

    /// Opens the groups of `statefulSets` (`namespace/name` → replicas this node is to
    /// run), removes the others' with their data (unless `removing` is false: the
    /// desired state is not known whole), and claims each group's ordinals. Returns
    /// who holds each ordinal asked for, by group.
    func ensure(_ statefulSets: [String: Int], removing: Bool = true) -> [String: [Int: Holder]] {
        let hosted = Set((try? loop.submit { Array(self.hosts.keys) }.wait()) ?? [])
        var peers: [String: [RaftID: HostPort]] = [:]
        for group in statefulSets.keys where !hosted.contains(group) && !hasData(group) {
            // Not decided yet (the DHT did not answer): the group is not opened this pass.
            guard let found = lookUpMembers(group) else { continue }
            peers[group] = found
        }
        let found = peers
        let opened = (try? loop.submit { self.open(statefulSets, removing: removing, peers: found) }.wait()) ?? [:]
        var holders: [String: [Int: Holder]] = [:]
        for (group, replicas) in statefulSets {
            var view = [Int: Holder](uniqueKeysWithValues: (0..<replicas).map { ($0, Holder.unknown) })
            defer { holders[group] = view }
            guard let host = opened[group],
                let (claims, members) = try? loop.submit({ (host.state.claims, host.membership.members) }).wait(),
                members.contains(transport.localID)
            else {
                continue
            }
            // This node's share of the ordinals: what it holds beyond it goes (its
            // pods first; the claims once they are gone), so that the other members
            // take it.
            let share = (replicas + members.count - 1) / members.count
            var held = claims.filter { $0.key < replicas && $0.value.node == node }.keys.sorted()
            while held.count > share, let surplus = held.popLast() {
                view[surplus] = .elsewhere("(its share is \(share))")
            }
            for ordinal in 0..<replicas where view[ordinal] == .unknown {
                if let claim = claims[ordinal] {
                    view[ordinal] = claim.node == node ? .here : .elsewhere(claim.node)
                    continue
                }
                guard held.count < share else { continue }
                let outcome = try? loop.flatSubmit { host.write(.claim(ordinal: ordinal, node: self.node)) }.wait()
                switch outcome {
                case .done?:
                    view[ordinal] = .here
                    held.append(ordinal)
                case .conflict?:
                    let holder: String?? = try? loop.submit { host.state.claims[ordinal]?.node }.wait()
                    if case .some(.some(let other)) = holder {
                        view[ordinal] = other == node ? .here : .elsewhere(other)
                    }
                case nil: break
                }
            }
        }
        return holders
    }

    /// Which of this node's ordinals are ready, by group; claims of ordinals this node
    /// no longer runs (scaled down, or gone) are released.
    func report(ready: [String: [Int: Bool]]) {
        for (group, ordinals) in ready {
            guard let host = try? loop.submit({ self.hosts[group] }).wait() else { continue }
            let claims = (try? loop.submit { host.state.claims }.wait()) ?? [:]
            var commands: [WorkloadState.Command] = []
            for (ordinal, claim) in claims where claim.node == node {
                if let isReady = ordinals[ordinal] {
                    if claim.ready != isReady { commands.append(.ready(ordinal: ordinal, node: node, ready: isReady)) }
                } else {
                    commands.append(.release(ordinal: ordinal, node: node))
                }
            }
            for command in commands {
                let outcome = try? loop.flatSubmit { host.write(command) }.wait()
                logger.info(
                    "StatefulSet ordinal reported",
                    metadata: ["group": "\(group)", "change": "\(command)", "applied": "\(outcome != nil)"]
                )
            }
        }
    }

    // MARK: the loop's

    private func open(
        _ statefulSets: [String: Int],
        removing: Bool,
        peers: [String: [RaftID: HostPort]]
    ) -> [String: RaftGroupHost] {
        for (group, host) in hosts where removing && statefulSets[group] == nil {
            // The others remove this member, and release what it held (its pods go).
            for id in host.membership.members where id != transport.localID {
                transport.send(.leave, to: id, group: group)
            }
            host.stop()
            discovered[group] = nil
            published[group] = nil
            transport.unregister(group)
            hosts[group] = nil
            do {
                try RaftGroupStore.remove(directory: path(of: group))
                logger.info("Raft group removed with its data", metadata: ["group": "\(group)"])
            } catch {
                logger.error("cannot remove a Raft group's data", metadata: ["group": "\(group)", "error": "\(error)"])
            }
        }
        for group in statefulSets.keys where hosts[group] == nil {
            var settings = RaftGroupHost.Settings(id: transport.localID)
            settings.raft.heartbeatInterval = UInt64(configuration.heartbeat * 1e9)
            settings.raft.electionTimeoutMin = UInt64(configuration.electionTimeout * 1e9)
            settings.raft.electionTimeoutMax = 2 * settings.raft.electionTimeoutMin
            settings.snapshotEvery = UInt64(configuration.snapshotEvery)
            settings.unreachableAfter = 2 * settings.raft.electionTimeoutMax
            settings.advertise = advertise.map { WorkloadState.Member(node: node, address: $0.description) }
            // Other nodes host it: this member joins theirs, with no membership of its own.
            let others = (peers[group] ?? [:]).filter { $0.key != transport.localID }
            for (id, address) in others { transport.setAddress(address, of: id) }
            discovered[group] = others
            do {
                let host = try RaftGroupHost(
                    group: group,
                    directory: path(of: group),
                    settings: settings,
                    bootstrap: others.isEmpty ? Membership(voters: [transport.localID]) : Membership(voters: []),
                    sink: transport,
                    loop: loop,
                    logger: logger
                )
                transport.register(host)
                host.start()
                hosts[group] = host
                logger.info(
                    others.isEmpty ? "Raft group open" : "Raft group open; joining the members on other nodes",
                    metadata: [
                        "group": "\(group)", "directory": "\(path(of: group))",
                        "others": "\(others.values.map(\.description).sorted())",
                    ]
                )
                maintain(group, host)
            } catch {
                logger.error("cannot open a Raft group", metadata: ["group": "\(group)", "error": "\(error)"])
            }
        }
        return hosts
    }

    private func path(of group: String) -> String { directory + "/" + group }

    private func hasData(_ group: String) -> Bool { FileManager.default.fileExists(atPath: path(of: group)) }

    // MARK: across nodes

    /// Every second: each group's record is published again when due, and a member
    /// that is not (yet) in its group, or whose address the group does not know, asks
    /// to join.
    private func maintain() {
        for (group, host) in hosts { maintain(group, host) }
    }

    private func maintain(_ group: String, _ host: RaftGroupHost) {
        guard let advertise, host.failure == nil else { return }
        let now = DHTService.now()
        if now >= (published[group] ?? 0) + Self.recordTTL / 3 {
            published[group] = now
            publishRecord(group, advertise, now: now)
        }
        let own = WorkloadState.Member(node: node, address: advertise.description)
        guard !host.membership.contains(transport.localID) || host.state.members[transport.localID] != own,
            !host.isLeader
        else { return }
        var targets = discovered[group] ?? [:]
        for (id, member) in host.state.members where id != transport.localID {
            if let address = HostPort(member.address) { targets[id] = address }
        }
        for id in Set(targets.keys).union(host.membership.members) where id != transport.localID {
            transport.send(.join(address: advertise.description), to: id, group: group)
        }
    }

    private func publishRecord(_ group: String, _ advertise: HostPort, now: UInt64) {
        guard let dht, let (namespace, name) = Self.split(group) else { return }
        let record = ServiceRecord(
            service: name + ServiceRecord.raftMemberSuffix,
            namespace: namespace,
            endpoint: advertise.description,
            ports: [],
            spiffeID: spiffeID,
            weight: 0,
            sequence: now,
            expires: now + Self.recordTTL
        )
        do {
            let signed = try SignedServiceRecord.sign(record, with: credentials)
            dht.publish(signed.dhtRecord).whenFailure { error in
                self.logger.debug(
                    "Raft member record not stored",
                    metadata: ["group": "\(group)", "error": "\(error)"]
                )
            }
        } catch {
            logger.warning("cannot sign a Raft member record", metadata: ["group": "\(group)", "error": "\(error)"])
        }
    }

    /// The members other nodes published for `group` (the reconciler's thread waits):
    /// nil when the DHT could not say (no peer answered while this node has some to
    /// ask), so that no group is started beside one that exists.
    private func lookUpMembers(_ group: String) -> [RaftID: HostPort]? {
        guard advertise != nil, let dht, let (namespace, name) = Self.split(group) else { return [:] }
        let key = ServiceRecord.key(service: name + ServiceRecord.raftMemberSuffix, namespace: namespace)
        guard let result = try? dht.findValue(key).wait() else { return nil }
        if result.closest.isEmpty && bootstraps { return nil }
        let validator = ServiceRecordValidator(bundle: credentials.bundle)
        var members: [RaftID: HostPort] = [:]
        for record in result.records {
            guard let service = try? validator.check(record), let address = HostPort(service.endpoint),
                let signed = try? SignedServiceRecord(decoding: record.value),
                let leaf = try? Certificate(der: signed.chain[0])
            else { continue }
            members[RaftTransport.memberID(publicKey: leaf.publicKeyDER)] = address
        }
        logger.info(
            "Raft group looked up in the DHT",
            metadata: ["group": "\(group)", "members": "\(members.values.map(\.description).sorted())"]
        )
        return members
    }

    private static func split(_ group: String) -> (namespace: String, name: String)? {
        let parts = group.split(separator: "/", maxSplits: 1).map(String.init)
        return parts.count == 2 ? (parts[0], parts[1]) : nil
    }
}
