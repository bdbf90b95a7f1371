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
    /// When this node's record for each group was last published, and as a voter or
    /// not (the loop's).
    private var published: [String: (at: UInt64, established: Bool)] = [:]
    /// Groups being left: passes so far (the loop's).
    private var leaving: [String: Int] = [:]
    /// When a joiner last looked its group's members up again (the loop's).
    private var relookedUp: [String: UInt64] = [:]
    /// Groups in which this node saw a voter's record while joining (the loop's).
    private var sawEstablished: Set<String> = []
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
    /// How long a node that is about to host a new group waits, once it said so, before
    /// it looks who else is (the DHT's stores reach the closest nodes within it).
    static let candidateWait = 1.0
    /// A joiner looks its group up again this often.
    static let relookupInterval: UInt64 = 5_000_000_000
    /// Passes a leaving member asks its group's leader to remove it.
    static let leaveAttempts = 10

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

    /// How a group this node holds no open member of is opened.
    enum Opening: Equatable {
        /// As its first member (nobody else hosts it, and this node's ID is the lowest
        /// of those about to).
        case bootstrap
        /// By joining the members at these addresses (`established`: voters of a group
        /// that exists; else nodes about to start it).
        case join([RaftID: HostPort], established: Bool)
        /// From its directory (a restart): as it was, or still joining if it was.
        case recover
    }

    /// Opens the groups of `statefulSets` (`namespace/name` → replicas this node is to
    /// run), leaves the others (unless `removing` is false: the desired state is not
    /// known whole; `existing`: the pods that still exist here, whose groups are left
    /// only once they are gone), and claims each group's ordinals. Returns who holds
    /// each ordinal asked for, by group.
    func ensure(
        _ statefulSets: [String: Int],
        removing: Bool = true,
        existing: some Collection<String> = [String]()
    ) -> [String: [Int: Holder]] {
        let (hosted, leavingGroups) =
            (try? loop.submit { (Set(self.hosts.keys), Set(self.leaving.keys)) }.wait()) ?? ([], [])
        if removing {
            let running = Set(existing.compactMap(Self.group(ofPodman:)))
            for group in hosted where statefulSets[group] == nil && !running.contains(group) { leave(group) }
        }
        // A group being left goes on being left (applied again meanwhile: it opens anew
        // once it is out).
        for group in leavingGroups where statefulSets[group] != nil { leave(group) }
        var openings: [String: Opening] = [:]
        for group in statefulSets.keys where !hosted.contains(group) {
            // Not decided yet (the DHT did not answer): the group is not opened this pass.
            guard let opening = hasData(group) ? .recover : decideOpening(group) else { continue }
            openings[group] = opening
        }
        let decided = openings
        let opened = (try? loop.submit { self.open(decided) }.wait()) ?? [:]
        var holders: [String: [Int: Holder]] = [:]
        for (group, replicas) in statefulSets {
            var view = [Int: Holder](uniqueKeysWithValues: (0..<replicas).map { ($0, Holder.unknown) })
            defer { holders[group] = view }
            // Claims are read from a state at least as new as the leader's commit (a
            // read index), so that a member behind does not start what it gave up.
            guard let host = opened[group], !leavingGroups.contains(group),
                (try? loop.submit { host.raftLeader }.wait()) != nil,
                (try? loop.flatSubmit { host.linearizableRead() }.wait()) != nil,
                let (claims, voters) = try? loop.submit({ (host.state.claims, host.membership.voters) }).wait(),
                voters.contains(transport.localID)
            else {
                continue
            }
            // This node's share of the ordinals (among the voters: a learner is not
            // caught up yet): what it holds beyond it goes (its pods first; the
            // claims once they are gone), so that the other members take it.
            let share = (replicas + voters.count - 1) / voters.count
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

    /// How a new group is opened (the reconciler's thread waits). This node first says
    /// in the DHT that it is about to host the group (a record of weight 0), then
    /// looks: it joins the members of an established group (records of weight 1) if
    /// there are any; else the node of lowest ID among those about to host it starts
    /// the group and the others join it. Nil: the DHT could not say.
    private func decideOpening(_ group: String) -> Opening? {
        guard let advertise, dht != nil else { return .bootstrap }
        _ = try? publishRecord(group, advertise, established: false, now: DHTService.now())?.wait()
        Thread.sleep(forTimeInterval: Self.candidateWait)
        guard let found = lookUpMembers(group) else { return nil }
        let others = found.filter { $0.key != transport.localID }
        let established = others.filter(\.value.established)
        if !established.isEmpty { return .join(established.mapValues(\.address), established: true) }
        if others.keys.allSatisfy({ $0 > transport.localID }) { return .bootstrap }
        return .join(others.mapValues(\.address), established: false)
    }

    /// Leaves `group`, whose StatefulSet this node no longer runs and whose pods are
    /// gone (the reconciler's thread): its claims are released, leadership handed to
    /// another voter, then the leader asked to remove it, pass after pass; the data
    /// goes once it is out of the group, or after `leaveAttempts` passes without an
    /// answer (a group of one goes at once).
    private func leave(_ group: String) {
        guard let host = try? loop.submit({ self.hosts[group] }).wait() else { return }
        let own = transport.localID
        guard
            let (membership, leads, leader, claims, out) = try? loop.submit({
                (
                    host.membership, host.isLeader, host.raftLeader,
                    host.state.claims.filter { $0.value.node == self.node },
                    host.failure != nil || host.removed
                )
            }).wait()
        else { return }
        // Out: the leader said so (its removal committed); alone; never in; or stopped.
        if out || membership.members.isEmpty || membership.members == [own] {
            _ = try? loop.submit { self.remove(group) }.wait()
            return
        }
        let attempts =
            (try? loop.submit { () -> Int in
                self.leaving[group, default: 0] += 1
                return self.leaving[group]!
            }.wait()) ?? 0
        guard attempts <= Self.leaveAttempts else {
            logger.warning("Raft group left without an answer from its leader", metadata: ["group": "\(group)"])
            _ = try? loop.submit { self.remove(group) }.wait()
            return
        }
        for ordinal in claims.keys.sorted() {
            guard (try? loop.flatSubmit { host.write(.release(ordinal: ordinal, node: self.node)) }.wait()) != nil
            else { return }
        }
        // A leader first hands its leadership to a caught-up follower it hears from; then,
        // as any member, asks the leader (every one it asked so far: a member removed
        // hears from no leader any more) until one answers that it is out.
        _ = try? loop.submit {
            if leads {
                host.handOverLeadership()
                return
            }
            if let leader, leader != own { host.leaveTargets.insert(leader) }
            for target in host.leaveTargets { self.transport.send(.leave, to: target, group: group) }
        }.wait()
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

    private func open(_ openings: [String: Opening]) -> [String: RaftGroupHost] {
        for (group, opening) in openings where hosts[group] == nil {
            var settings = RaftGroupHost.Settings(id: transport.localID)
            settings.raft.heartbeatInterval = UInt64(configuration.heartbeat * 1e9)
            settings.raft.electionTimeoutMin = UInt64(configuration.electionTimeout * 1e9)
            settings.raft.electionTimeoutMax = 2 * settings.raft.electionTimeoutMin
            settings.snapshotEvery = UInt64(configuration.snapshotEvery)
            settings.unreachableAfter = 2 * settings.raft.electionTimeoutMax
            settings.advertise = advertise.map { WorkloadState.Member(node: node, address: $0.description) }
            // The member that starts a group says so on disk before anything else (a
            // `founder` file, synced): a directory without one is a joiner's, which,
            // restarted before it was added, must not start a group of its own.
            var others: [RaftID: HostPort] = [:]
            do {
                switch opening {
                case .bootstrap:
                    try makeDirectory(group, marker: Self.founderMarker)
                case .join(let members, let established):
                    others = members
                    if established { sawEstablished.insert(group) }
                    try makeDirectory(group, marker: Self.joiningMarker)
                case .recover: break
                }
            } catch {
                logger.error("cannot open a Raft group", metadata: ["group": "\(group)", "error": "\(error)"])
                continue
            }
            // A directory from before the markers is a founder's (groups had one member).
            let joining =
                FileManager.default.fileExists(atPath: path(of: group) + "/" + Self.joiningMarker)
                && !FileManager.default.fileExists(atPath: path(of: group) + "/" + Self.founderMarker)
            for (id, address) in others { transport.setAddress(address, of: id) }
            discovered[group] = others
            do {
                let host = try RaftGroupHost(
                    group: group,
                    directory: path(of: group),
                    settings: settings,
                    bootstrap: joining ? Membership(voters: []) : Membership(voters: [transport.localID]),
                    sink: transport,
                    loop: loop,
                    logger: logger
                )
                host.joinTargets = Set(others.keys)
                transport.register(host)
                host.start()
                hosts[group] = host
                logger.info(
                    joining ? "Raft group open; joining the members on other nodes" : "Raft group open",
                    metadata: [
                        "group": "\(group)", "directory": "\(path(of: group))", "opening": "\(opening)",
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

    /// Stops `group`'s member and removes its data.
    private func remove(_ group: String) {
        guard let host = hosts.removeValue(forKey: group) else { return }
        host.stop()
        discovered[group] = nil
        published[group] = nil
        leaving[group] = nil
        relookedUp[group] = nil
        sawEstablished.remove(group)
        transport.unregister(group)
        for marker in [Self.founderMarker, Self.joiningMarker] { unlink(path(of: group) + "/" + marker) }
        do {
            try RaftGroupStore.remove(directory: path(of: group))
            logger.info("Raft group removed with its data", metadata: ["group": "\(group)"])
        } catch {
            logger.error("cannot remove a Raft group's data", metadata: ["group": "\(group)", "error": "\(error)"])
        }
    }

    private func path(of group: String) -> String { directory + "/" + group }

    /// How a group's directory was made: by the member that started the group, or by one
    /// that joins it (restarted before it was added, it must join again, never start a
    /// group of its own).
    static let founderMarker = "founder"
    static let joiningMarker = "joining"

    /// Makes `group`'s directory with its marker in it, at once: made and synced under a
    /// temporary name, then renamed, so that no crash leaves one without its marker.
    private func makeDirectory(_ group: String, marker: String) throws {
        let final = path(of: group)
        let temporary = final + ".tmp-\(getpid())"
        try? FileManager.default.removeItem(atPath: temporary)
        try PEMFile.createDirectory(temporary)
        try PEMFile.write(temporary + "/" + marker, "\(marker)\n", mode: 0o600)
        guard rename(temporary, final) == 0 else {
            throw RaftGroupsError("cannot rename \(temporary) to \(final): \(String(cString: strerror(errno)))")
        }
        let parent = Glibc.open((final as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if parent >= 0 {
            fsync(parent)
            close(parent)
        }
    }

    private func hasData(_ group: String) -> Bool { FileManager.default.fileExists(atPath: path(of: group)) }

    // MARK: across nodes

    /// Every second: each group's record is published again when due, and a member
    /// that is not (yet) in its group, or whose address the group does not know, asks
    /// to join.
    private func maintain() {
        for (group, host) in hosts { maintain(group, host) }
    }

    private func maintain(_ group: String, _ host: RaftGroupHost) {
        guard let advertise, host.failure == nil, leaving[group] == nil else { return }
        let now = DHTService.now()
        let member = host.membership.contains(transport.localID)
        let established = host.membership.isVoter(transport.localID)
        if now >= (published[group]?.at ?? 0) + Self.recordTTL / 3 || published[group]?.established != established {
            published[group] = (now, established)
            _ = try? publishRecord(group, advertise, established: established, now: now)
        }
        let own = WorkloadState.Member(node: node, address: advertise.description)
        guard !member || host.state.members[transport.localID] != own, !host.isLeader else { return }
        var targets = discovered[group] ?? [:]
        for (id, member) in host.state.members where id != transport.localID {
            if let address = HostPort(member.address) { targets[id] = address }
        }
        host.joinTargets.formUnion(targets.keys)
        for (id, address) in targets { transport.setAddress(address, of: id) }
        for id in Set(targets.keys).union(host.membership.members) where id != transport.localID {
            transport.send(.join(address: advertise.description, empty: host.isEmpty), to: id, group: group)
        }
        // Not a member yet: the members are looked up again now and then (those found
        // first may be gone). A joiner that holds nothing and finds no established
        // group, while its own ID is the lowest of those about to host it, gives its
        // directory up: the next pass starts the group afresh.
        guard !member, now >= (relookedUp[group] ?? 0) + Self.relookupInterval, let dht,
            let (namespace, name) = Self.split(group)
        else { return }
        relookedUp[group] = now
        let key = ServiceRecord.key(service: name + ServiceRecord.raftMemberSuffix, namespace: namespace)
        let validator = ServiceRecordValidator(bundle: credentials.bundle)
        dht.findValue(key).hop(to: loop).whenSuccess { result in
            guard self.hosts[group] === host, !host.membership.contains(self.transport.localID) else { return }
            let found = Self.members(in: result, validator: validator).filter { $0.key != self.transport.localID }
            let established = found.filter(\.value.established)
            self.discovered[group] = (established.isEmpty ? found : established).mapValues(\.address)
            if !established.isEmpty { self.sawEstablished.insert(group) }
            // Never after an established group was seen (a lookup that misses it is no
            // proof it is gone), nor on a lookup that left some contacts out.
            if established.isEmpty, !self.sawEstablished.contains(group), result.skipped == 0,
                found.keys.allSatisfy({ $0 > self.transport.localID }), host.isEmpty,
                !result.closest.isEmpty || !self.bootstraps
            {
                self.logger.info(
                    "Raft group: no established group to join; starting afresh",
                    metadata: ["group": "\(group)"]
                )
                self.remove(group)
            }
        }
    }

    /// Publishes this node's record for `group` (`established`: a voter of it) off the
    /// loop (the DHT keeps it on disk); nil if it could not be signed.
    @discardableResult
    private func publishRecord(
        _ group: String,
        _ advertise: HostPort,
        established: Bool,
        now: UInt64
    ) throws -> EventLoopFuture<Int>? {
        guard let dht, let (namespace, name) = Self.split(group) else { return nil }
        let record = ServiceRecord(
            service: name + ServiceRecord.raftMemberSuffix,
            namespace: namespace,
            endpoint: advertise.description,
            ports: [],
            spiffeID: spiffeID,
            weight: established ? 1 : 0,
            sequence: now,
            expires: now + Self.recordTTL
        )
        let signed = try SignedServiceRecord.sign(record, with: credentials)
        let promise = loop.makePromise(of: Int.self)
        DispatchQueue.global().async { promise.completeWith(dht.publish(signed.dhtRecord)) }
        promise.futureResult.whenFailure { error in
            self.logger.debug("Raft member record not stored", metadata: ["group": "\(group)", "error": "\(error)"])
        }
        return promise.futureResult
    }

    /// The members and candidates published for `group` (the reconciler's thread
    /// waits): nil when the DHT could not say (no peer answered while this node has
    /// some to ask), so that no group is started beside one that exists.
    private func lookUpMembers(_ group: String) -> [RaftID: (address: HostPort, established: Bool)]? {
        guard let dht, let (namespace, name) = Self.split(group) else { return [:] }
        let key = ServiceRecord.key(service: name + ServiceRecord.raftMemberSuffix, namespace: namespace)
        guard let result = try? dht.findValue(key).wait() else { return nil }
        // Nobody answered, or nothing found while some were not asked (they timed out
        // lately): not a proof that nobody hosts the group.
        if result.closest.isEmpty && bootstraps { return nil }
        if result.records.isEmpty && result.skipped > 0 { return nil }
        let members = Self.members(in: result, validator: ServiceRecordValidator(bundle: credentials.bundle))
        logger.info(
            "Raft group looked up in the DHT",
            metadata: [
                "group": "\(group)",
                "members":
                    "\(members.values.map { "\($0.address)\($0.established ? "" : " (about to host)")" }.sorted())",
            ]
        )
        return members
    }

    /// The member records in a lookup's answer, by member ID.
    private static func members(
        in result: LookupResult,
        validator: ServiceRecordValidator
    ) -> [RaftID: (address: HostPort, established: Bool)] {
        var members: [RaftID: (address: HostPort, established: Bool)] = [:]
        for record in result.records {
            guard let service = try? validator.check(record), let address = HostPort(service.endpoint),
                let signed = try? SignedServiceRecord(decoding: record.value),
                let leaf = try? Certificate(der: signed.chain[0])
            else { continue }
            members[RaftTransport.memberID(publicKey: leaf.publicKeyDER)] = (address, service.weight == 1)
        }
        return members
    }

    /// The group (`namespace/name`) of a StatefulSet pod's podman name (`name-N.namespace`).
    static func group(ofPodman name: String) -> String? {
        guard let dot = name.lastIndex(of: "."), let dash = name[..<dot].lastIndex(of: "-"),
            Int(name[name.index(after: dash)..<dot]) != nil
        else { return nil }
        return "\(name[name.index(after: dot)...])/\(name[..<dash])"
    }

    private static func split(_ group: String) -> (namespace: String, name: String)? {
        let parts = group.split(separator: "/", maxSplits: 1).map(String.init)
        return parts.count == 2 ? (parts[0], parts[1]) : nil
    }
}

struct RaftGroupsError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
