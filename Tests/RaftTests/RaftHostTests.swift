import Foundation
import Logging
import MeshAPI
import MeshConfiguration
import MeshIdentity
import MeshTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Raft
import RaftHost
import RaftSimulation
import Testing

/// Three members for real: each on its own event loop with its own directory (fsync),
/// talking mutual TLS as node identities over loopback. Clients write and read while
/// the leader is stopped and later restarted from its disk; the history must be
/// linearizable, a new leader must serve within the election bound, and the restarted
/// member must catch up to the same state.
@Suite struct RaftHostTests {
    static let root = try! CertificateAuthority.createRoot(trustDomain: try! TrustDomain("raft.test"))

    final class Member: @unchecked Sendable {
        let name: String
        let loop: any EventLoop
        let directory: String
        let credentials: WorkloadCredentials
        /// Replaced when the member restarts, while clients read them: behind a lock.
        private let running = NIOLockedValueBox<(transport: RaftTransport?, host: RaftGroupHost?, port: Int)>(
            (nil, nil, 0)
        )
        var transport: RaftTransport! { running.withLockedValue { $0.transport } }
        var host: RaftGroupHost! { running.withLockedValue { $0.host } }
        var port: Int { running.withLockedValue { $0.port } }
        var id: RaftID { RaftTransport.memberID(publicKey: credentials.key.publicKeyDER) }

        init(_ name: String, loop: any EventLoop, directory: String) throws {
            self.name = name
            self.loop = loop
            self.directory = directory
            credentials = try RaftHostTests.root.issueWorkload(try SpiffeID("spiffe://raft.test/node/\(name)"))
        }

        /// Opens the directory and the listener (a new port each time).
        func start(members: [RaftID], advertise: HostPort? = nil) async throws {
            let transport = try RaftTransport(loop: loop, credentials: credentials, logger: Logger(label: name))
            var settings = RaftGroupHost.Settings(id: id)
            settings.advertise = advertise.map { WorkloadState.Member(node: name, address: $0.description) }
            settings.raft.heartbeatInterval = 50_000_000
            settings.raft.electionTimeoutMin = 300_000_000
            settings.raft.electionTimeoutMax = 600_000_000
            settings.snapshotEvery = 20
            let host = try RaftGroupHost(
                group: "shop/orders",
                directory: directory,
                settings: settings,
                bootstrap: Membership(voters: members),
                sink: transport,
                loop: loop,
                logger: Logger(label: name)
            )
            let port = try await loop.flatSubmit {
                transport.register(host)
                host.start()
                return transport.listen(on: advertise ?? HostPort(host: "127.0.0.1", port: 0))
            }.get().localAddress!.port!
            running.withLockedValue { $0 = (transport, host, port) }
        }

        func stop() async throws {
            try await loop.flatSubmit { [self] in
                host.stop()
                transport.unregister(host.group)
                return transport.close()
            }.get()
        }

        func status() async throws -> RaftGroupStatus {
            try await loop.submit { [self] in host.status(node: name) }.get()
        }
    }

    /// Members and a way to reach each, as a client sees them.
    final class Cluster: @unchecked Sendable {
        let members: [Member]
        let lock = NSLock()
        private var down: Set<Int> = []

        init(_ members: [Member]) { self.members = members }

        func connectAll() async throws {
            for member in members where !isDown(member) {
                let transport = member.transport!
                let peers = members.map { ($0.id, $0.port) }
                try await member.loop.submit {
                    for (id, port) in peers { transport.setAddress(HostPort(host: "127.0.0.1", port: port), of: id) }
                }.get()
            }
        }

        func isDown(_ member: Member) -> Bool {
            lock.withLock { down.contains(members.firstIndex { $0 === member }!) }
        }

        func setDown(_ index: Int, _ value: Bool) {
            lock.withLock { if value { down.insert(index) } else { down.remove(index) } }
        }

        func leader() async throws -> Int? {
            for (index, member) in members.enumerated() where !isDown(member) {
                if try await member.status().role == "leader" { return index }
            }
            return nil
        }
    }

    static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    static func attempt<T>(_ body: () async throws -> T) async -> Result<T, any Error> {
        do { return .success(try await body()) } catch { return .failure(error) }
    }

    /// One client: gets, unique puts and compare-and-swaps (by revision, which with
    /// unique values is a swap by value) on three keys, each recorded as the checker
    /// wants it.
    /// Writes acknowledged by every client together: the load runs until `deadline`
    /// and at least `minimumWrites` (a slow build, the sanitizers, takes longer), but
    /// never past `deadline` plus a minute.
    static let acknowledgedWrites = NIOLockedValueBox(0)
    static let minimumWrites = 60

    static func client(_ number: Int, cluster: Cluster, until deadline: UInt64) async -> [KVOperation] {
        var history: [KVOperation] = []
        var random = SplitMix64(seed: UInt64(number) &* 7919)
        var target = number % cluster.members.count
        var counter = 0
        while now() < deadline || acknowledgedWrites.withLockedValue({ $0 }) < minimumWrites,
            now() < deadline + 60_000_000_000
        {
            let member = cluster.members[target]
            if cluster.isDown(member) {
                target = (target + 1) % cluster.members.count
                continue
            }
            let host = member.host!
            let key = "k\(random.next() % 3)"
            let called = now()
            switch random.next() % 3 {
            case 0:
                let result = await attempt {
                    try await host.loop.flatSubmit {
                        host.linearizableRead().map { _ in
                            host.state.values[key].map { String(decoding: $0.data, as: UTF8.self) }
                        }
                    }.get()
                }
                switch result {
                case .success(let value):
                    history.append(
                        KVOperation(
                            client: number,
                            key: key,
                            kind: .get,
                            outcome: .value(value),
                            called: called,
                            returned: now()
                        )
                    )
                case .failure(let error):
                    if case .notLeader(let leader)? = error as? RaftGroupError {
                        target =
                            leader.flatMap { id in cluster.members.firstIndex { $0.id == id } } ?? (target + 1)
                            % cluster.members.count
                        try? await Task.sleep(for: .milliseconds(leader == nil ? 20 : 0))
                    }
                }
            default:
                counter += 1
                let value = "c\(number)-\(counter)"
                // A swap reads first (its own operation), then names the revision it saw.
                var condition: (expected: String?, revision: UInt64)?
                if random.next() % 2 == 0 {
                    let attempted = await attempt {
                        try await host.loop.flatSubmit {
                            host.linearizableRead().map { _ in host.state.values[key] }
                        }.get()
                    }
                    if case .success(let read) = attempted {
                        let seen = read.map { String(decoding: $0.data, as: UTF8.self) }
                        history.append(
                            KVOperation(
                                client: number,
                                key: key,
                                kind: .get,
                                outcome: .value(seen),
                                called: called,
                                returned: now()
                            )
                        )
                        condition = (seen, read?.modRevision ?? 0)
                    }
                }
                let started = now()
                let command = WorkloadState.Command.put(
                    key: key,
                    value: Array(value.utf8),
                    ifRevision: condition?.revision
                )
                let kind: KVOperation.Kind = condition.map { .cas(expected: $0.expected, new: value) } ?? .put(value)
                let result = await attempt { try await host.loop.flatSubmit { host.write(command) }.get() }
                let outcome: KVOperation.Outcome
                switch result {
                case .success(.done):
                    outcome = condition == nil ? .done : .swapped(true)
                    acknowledgedWrites.withLockedValue { $0 += 1 }
                case .success(.conflict):
                    outcome = .swapped(false)
                case .failure(RaftGroupError.notLeader(let leader)):
                    outcome = .failed
                    target =
                        leader.flatMap { id in cluster.members.firstIndex { $0.id == id } } ?? (target + 1)
                        % cluster.members.count
                    if leader == nil { try? await Task.sleep(for: .milliseconds(20)) }
                case .failure(RaftGroupError.lost), .failure(RaftGroupError.refused):
                    outcome = .failed
                case .failure:
                    outcome = .unknown
                }
                history.append(
                    KVOperation(
                        client: number,
                        key: key,
                        kind: kind,
                        outcome: outcome,
                        called: started,
                        returned: now()
                    )
                )
            }
        }
        return history
    }

    @Test func threeMembersOverMutualTLSSurviveTheLeadersLossAndStayLinearizable() async throws {
        let directory = TemporaryDirectory()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        let members = try (1...3).map {
            try Member("n\($0)", loop: group.next(), directory: directory.path + "/n\($0)")
        }
        let ids = members.map(\.id)
        for member in members { try await member.start(members: ids) }
        let cluster = Cluster(members)
        try await cluster.connectAll()

        let firstLeader = try await Self.waitForLeader(cluster, within: 5)
        let workloadEnd = Self.now() + 4_000_000_000
        let clients = Task {
            await withTaskGroup(of: [KVOperation].self) { tasks in
                for number in 0..<4 {
                    tasks.addTask { await Self.client(number, cluster: cluster, until: workloadEnd) }
                }
                return await tasks.reduce(into: []) { $0 += $1 }
            }
        }
        // After a second of load, the leader stops; a second and a half later it
        // comes back from its directory, on a new port.
        try await Task.sleep(for: .seconds(1))
        cluster.setDown(firstLeader, true)
        let stopped = Self.now()
        try await members[firstLeader].stop()
        let next = try await Self.waitForLeader(cluster, within: 5 * sanitizerSlowdown)
        let failover = Double(Self.now() - stopped) / 1e9
        try await Task.sleep(for: .milliseconds(1500))
        try await members[firstLeader].start(members: ids)
        cluster.setDown(firstLeader, false)
        try await cluster.connectAll()
        let history = await clients.value

        // Everyone converges on the same state.
        var statuses: [RaftGroupStatus] = []
        let converged = try await Self.poll(within: 10) {
            statuses = []
            for member in members { statuses.append(try await member.status()) }
            return Set(statuses.map(\.applied)).count == 1 && statuses[0].applied == statuses[0].commit
        }
        var states: [WorkloadState] = []
        for member in members { states.append(try await member.loop.submit { member.host.state }.get()) }
        for member in members { try await member.stop() }
        try await group.shutdownGracefully()

        let verdict = LinearizabilityChecker.check(history)
        let acknowledged = history.filter { $0.outcome == .done || $0.outcome == .swapped(true) }.count
        print(
            "RaftHostTests: \(history.count) operations, \(acknowledged) writes acknowledged, a new leader "
                + "\(String(format: "%.3f", failover)) s after the old one stopped, snapshots at \(statuses.map(\.snapshotIndex))"
        )
        #expect(verdict.linearizable, "not linearizable at key \(verdict.key ?? "?")")
        #expect(acknowledged >= Self.minimumWrites, "only \(acknowledged) writes acknowledged")
        #expect(next != firstLeader)
        // Two maximum election timeouts are 1.2 s; 2 s leaves room for a machine running
        // every suite at once (under ThreadSanitizer, with every suite, it took 5.2 s).
        #expect(
            failover < 2 * sanitizerSlowdown,
            "a new leader after \(failover) s (election timeout 300-600 ms)"
        )
        #expect(converged, "members did not converge: \(statuses.map { ($0.applied, $0.commit) })")
        #expect(states[0].values == states[1].values && states[1].values == states[2].values)
        #expect(
            statuses.allSatisfy { $0.snapshotIndex > 0 },
            "snapshots every 20 entries: \(statuses.map(\.snapshotIndex))"
        )
    }

    /// A node joins a group of one through a `join` frame: recorded with its address,
    /// added as a learner and promoted; its writes and reads are carried to the
    /// leader; a node that is not a member has its forwarded write refused; the joined
    /// one releases its claim and leaves, and its address is forgotten.
    @Test func aNodeJoinsIsPromotedWritesThroughTheLeaderAndLeaves() async throws {
        let directory = TemporaryDirectory()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        let (first, joiner, stranger) = (
            try Member("n1", loop: group.next(), directory: directory.path + "/n1"),
            try Member("n2", loop: group.next(), directory: directory.path + "/n2"),
            try Member("n3", loop: group.next(), directory: directory.path + "/n3")
        )
        let addresses = try (0..<3).map { _ in HostPort(host: "127.0.0.1", port: try freePort()) }
        try await first.start(members: [first.id], advertise: addresses[0])
        try await joiner.start(members: [], advertise: addresses[1])
        try await stranger.start(members: [], advertise: addresses[2])
        for member in [joiner, stranger] {
            let transport = member.transport!
            try await member.loop.submit { transport.setAddress(addresses[0], of: first.id) }.get()
        }
        func state(_ member: Member) async throws -> (Membership, WorkloadState) {
            try await member.loop.submit { (member.host.membership, member.host.state) }.get()
        }
        let firstHost = first.host!
        let joinerHost = joiner.host!
        let joinerTransport = joiner.transport!
        // A member that is joining takes messages only from those it asked.
        try await joiner.loop.submit { joinerHost.joinTargets = [first.id] }.get()

        // Asked until it is a voter (the first member records its own address first).
        let promoted = try await Self.poll(within: 10) {
            try await joiner.loop.submit {
                joinerTransport.send(
                    .join(address: addresses[1].description, empty: false),
                    to: first.id,
                    group: "shop/orders"
                )
            }.get()
            try await Task.sleep(for: .milliseconds(100))
            return try await state(first).0.voters == [first.id, joiner.id].sorted()
        }
        let (membership, joined) = try await state(first)
        #expect(promoted, "the joiner became a voter: \(membership)")
        let members = joined.members
        #expect(members[joiner.id] == WorkloadState.Member(node: "n2", address: addresses[1].description))
        #expect(members[first.id] == WorkloadState.Member(node: "n1", address: addresses[0].description))

        // Through the follower: a write carried to the leader, then a read.
        let written = try await joiner.loop.flatSubmit {
            joinerHost.write(.put(key: "greeting", value: Array("hello".utf8), ifRevision: nil))
        }.get()
        guard case .done(let revision, _) = written else { return #expect(Bool(false), "\(written)") }
        let read = try await joiner.loop.flatSubmit {
            joinerHost.linearizableRead().map { _ in joinerHost.state.values["greeting"] }
        }.get()
        #expect(read.map { String(decoding: $0.data, as: UTF8.self) } == "hello" && read?.modRevision == revision)
        _ = try await joiner.loop.flatSubmit { joinerHost.write(.claim(ordinal: 0, node: "n2")) }.get()

        // A node that is not a member: its forwarded write is refused by the transport.
        let strangerTransport = stranger.transport!
        let put = WorkloadState.Command.put(key: "intruder", value: [1], ifRevision: nil).encoded()
        try await stranger.loop.submit {
            strangerTransport.send(.forward(request: 1, command: put), to: first.id, group: "shop/orders")
            strangerTransport.send(.leave, to: first.id, group: "shop/orders")
        }.get()

        // The joiner leaves: it releases its claim (its pods are gone), then is removed
        // and its address forgotten.
        _ = try await joiner.loop.flatSubmit { joinerHost.write(.release(ordinal: 0, node: "n2")) }.get()
        let left = try await Self.poll(within: 10) {
            try await joiner.loop.submit { joinerTransport.send(.leave, to: first.id, group: "shop/orders") }.get()
            try await Task.sleep(for: .milliseconds(100))
            let (membership, workload) = try await state(first)
            return membership.members == [first.id] && workload.members[joiner.id] == nil
                && workload.claims[0] == nil
        }
        let final = try await first.loop.submit { (firstHost.membership, firstHost.state) }.get()
        for member in [first, joiner, stranger] { try await member.stop() }
        try await group.shutdownGracefully()
        #expect(left, "the joiner left: \(final.0), claims \(final.1.claims)")
        #expect(final.1.values["intruder"] == nil, "a stranger's forwarded write was applied")
        #expect(final.1.values["greeting"] != nil)
    }

    /// What a member may have the leader propose for it: the workload's keys, and its
    /// own node's claims and readiness, never another node's, an election or an address.
    @Test func aMemberForwardsOnlyWhatItMaySay() {
        #expect(RaftGroupHost.mayForward(.put(key: "k", value: [1], ifRevision: nil), from: "n2"))
        #expect(RaftGroupHost.mayForward(.delete(key: "k", ifRevision: 3), from: "n2"))
        #expect(RaftGroupHost.mayForward(.claim(ordinal: 0, node: "n2"), from: "n2"))
        #expect(RaftGroupHost.mayForward(.ready(ordinal: 0, node: "n2", ready: true), from: "n2"))
        #expect(!RaftGroupHost.mayForward(.claim(ordinal: 0, node: "n1"), from: "n2"))
        #expect(!RaftGroupHost.mayForward(.release(ordinal: 0, node: "n1"), from: "n2"))
        #expect(!RaftGroupHost.mayForward(.ready(ordinal: 0, node: "n1", ready: false), from: "n2"))
        #expect(!RaftGroupHost.mayForward(.elect(ordinal: 0, ifRevision: 0), from: "n2"))
        #expect(!RaftGroupHost.mayForward(.member(id: 1, node: "n2", address: "10.0.0.2:15012"), from: "n2"))
    }

    static func waitForLeader(_ cluster: Cluster, within seconds: Double) async throws -> Int {
        var found: Int?
        _ = try await poll(within: seconds) {
            found = try await cluster.leader()
            return found != nil
        }
        return try #require(found, "no leader within \(seconds) s")
    }

    static func poll(within seconds: Double, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = now() + UInt64(seconds * 1e9)
        while now() < deadline {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return false
    }
}
