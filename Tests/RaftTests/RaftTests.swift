import Raft
import Testing

/// Raft's rules event by event: members driven by hand, messages delivered (or not)
/// one by one, time given. No simulator, no randomness but the seeds.
@Suite struct RaftTests {
    /// Members and the messages between them, delivered first in, first out.
    struct Cluster {
        var members: [RaftID: Raft] = [:]
        var disks: [RaftID: RaftStorage] = [:]
        var inbox: [RaftMessage] = []
        var applied: [RaftID: [LogEntry]] = [:]
        var reads: [RaftID: [(id: UInt64, index: UInt64)]] = [:]
        var failedReads: [RaftID: [UInt64]] = [:]
        var installed: [RaftID: Snapshot] = [:]
        var isolated: Set<RaftID> = []
        var now: UInt64 = 0

        init(
            _ ids: [RaftID],
            storage: [RaftID: RaftStorage] = [:],
            configure: (inout Raft.Configuration) -> Void = { _ in }
        ) {
            for id in ids {
                var configuration = Raft.Configuration(id: id)
                configure(&configuration)
                let disk = storage[id] ?? RaftStorage()
                disks[id] = disk
                var raft = Raft(
                    configuration: configuration,
                    storage: disk,
                    bootstrap: Membership(voters: ids),
                    seed: 7
                )
                let directives = raft.start(now: 0)
                members[id] = raft
                absorb(id, directives)
            }
        }

        mutating func absorb(_ id: RaftID, _ directives: [Raft.Directive]) {
            for directive in directives {
                switch directive {
                case .persist(let state, let entries):
                    var disk = disks[id] ?? RaftStorage()
                    disk.hardState = state
                    if let first = entries.first {
                        disk.entries.removeAll { $0.index >= first.index }
                        disk.entries += entries
                    }
                    disks[id] = disk
                case .installSnapshot(let snapshot):
                    installed[id] = snapshot
                case .send(let message):
                    inbox.append(message)
                case .apply(let entries):
                    applied[id, default: []] += entries
                case .readReady(let read, let index):
                    reads[id, default: []].append((read, index))
                case .readFailed(let read, _):
                    failedReads[id, default: []].append(read)
                case .leaderChanged, .wake:
                    break
                }
            }
        }

        mutating func tick(_ id: RaftID, at time: UInt64) {
            now = max(now, time)
            var raft = members[id]!
            let directives = raft.tick(now: time)
            members[id] = raft
            absorb(id, directives)
        }

        /// Delivers until nothing is left (or `limit` messages), dropping those to or
        /// from isolated members and those `drop` refuses.
        mutating func deliver(limit: Int = 10_000, drop: (RaftMessage) -> Bool = { _ in false }) {
            var delivered = 0
            while !inbox.isEmpty, delivered < limit {
                let message = inbox.removeFirst()
                delivered += 1
                if isolated.contains(message.from) || isolated.contains(message.to) || drop(message) { continue }
                guard var raft = members[message.to] else { continue }
                let directives = raft.receive(message, now: now)
                members[message.to] = raft
                absorb(message.to, directives)
            }
        }

        /// `id` times out first (the others never tick): it campaigns and, with the
        /// votes delivered, wins.
        mutating func elect(_ id: RaftID, at time: UInt64) {
            tick(id, at: time)
            deliver()
        }

        mutating func propose(_ id: RaftID, _ text: String) throws -> UInt64 {
            var raft = members[id]!
            let (index, directives) = try raft.propose(Array(text.utf8), now: now)
            members[id] = raft
            absorb(id, directives)
            return index
        }

        func commands(_ id: RaftID) -> [String] {
            (applied[id] ?? []).compactMap {
                if case .command(let bytes) = $0.kind { String(decoding: bytes, as: UTF8.self) } else { nil }
            }
        }
    }

    static let second: UInt64 = 1_000_000_000

    @Test func aLeaderIsElectedCommitsItsNoopAndReplicatesCommands() throws {
        var cluster = Cluster([1, 2, 3])
        cluster.elect(1, at: 3 * Self.second)
        #expect(cluster.members[1]?.role == .leader && cluster.members[1]?.term == 1)
        #expect(cluster.members[2]?.leader == 1 && cluster.members[3]?.leader == 1)
        #expect(cluster.members[1]?.commit == 1, "the leader's noop commits")
        _ = try cluster.propose(1, "a")
        _ = try cluster.propose(1, "b")
        cluster.deliver()
        cluster.tick(1, at: cluster.now + Self.second / 5)  // a heartbeat carries the commit
        cluster.deliver()
        for id: RaftID in [1, 2, 3] {
            #expect(cluster.commands(id) == ["a", "b"], "member \(id)")
            #expect(cluster.disks[id]?.entries.count == 3, "noop, a, b on every disk")
        }
        #expect(throws: Raft.Refusal.notLeader(1)) { try cluster.propose(2, "c") }
    }

    /// A group of one (a StatefulSet whose ordinals all run on one node) has nobody to
    /// wait for: its member leads as it starts, and again as it restarts.
    @Test func theOnlyVoterLeadsAtOnce() {
        let cluster = Cluster([1])
        #expect(cluster.members[1]!.role == .leader && cluster.members[1]!.term == 1)
        #expect(cluster.members[1]!.leadsWithCommit, "its noop committed at once")
        var restarted = Raft(
            configuration: Raft.Configuration(id: 1),
            storage: cluster.disks[1]!,
            bootstrap: Membership(voters: [1]),
            seed: 7
        )
        _ = restarted.start(now: 5)
        #expect(restarted.role == .leader && restarted.term == 2)
    }

    @Test func preVoteKeepsAnIsolatedFollowerFromBumpingTheTerm() {
        for preVote in [true, false] {
            var cluster = Cluster([1, 2, 3]) { $0.preVote = preVote }
            cluster.elect(1, at: 3 * Self.second)
            cluster.isolated = [3]
            // 20 s: the leader's heartbeats reach member 2, member 3 times out again and again.
            for step in 1...200 {
                let time = 3 * Self.second + UInt64(step) * Self.second / 10
                cluster.tick(1, at: time)
                cluster.tick(3, at: time)
                cluster.deliver()
            }
            let term = cluster.members[3]!.term
            #expect(preVote ? term == 1 : term > 1, "PreVote \(preVote): term \(term)")
            // Back on the network: with PreVote nobody's term or leader changes.
            cluster.isolated = []
            for step in 1...20 {
                let time = 23 * Self.second + UInt64(step) * Self.second / 10
                cluster.tick(3, at: time)
                cluster.tick(1, at: time)
                cluster.deliver()
            }
            if preVote {
                #expect(cluster.members[1]?.role == .leader && cluster.members[1]?.term == 1)
                #expect(cluster.members[3]?.leader == 1 && cluster.members[3]?.term == 1)
            }
        }
    }

    /// Raft's Figure 8: a leader never commits an entry of an earlier term by counting
    /// replicas, only through an entry of its own term.
    @Test func aLeaderCommitsOnlyThroughAnEntryOfItsOwnTerm() {
        let old = [LogEntry(term: 1, index: 1, kind: .noop), LogEntry(term: 2, index: 2, kind: .command([2]))]
        var cluster = Cluster(
            [1, 2, 3],
            storage: [
                1: RaftStorage(hardState: HardState(term: 3), entries: old),
                2: RaftStorage(hardState: HardState(term: 3), entries: [old[0]]),
                3: RaftStorage(hardState: HardState(term: 3), entries: [old[0]]),
            ]
        ) { $0.maxEntriesPerAppend = 1 }  // member 2 gets index 2, then index 3
        cluster.isolated = [3]
        cluster.tick(1, at: 3 * Self.second)
        var sawIndex2OnAMajority = false
        while !cluster.inbox.isEmpty {
            cluster.deliver(limit: 1)
            if cluster.members[1]?.followers[2]?.match == 2 {
                sawIndex2OnAMajority = true
                #expect(cluster.members[1]?.commit == 0, "index 2 (term 2) is on a majority, and not committed")
            }
        }
        #expect(cluster.members[1]?.role == .leader && cluster.members[1]?.term == 4)
        #expect(sawIndex2OnAMajority)
        #expect(cluster.members[1]?.commit == 3, "the noop of term 4 commits, and index 2 with it")
    }

    @Test func aReadIsAnsweredOnlyAfterAQuorumConfirmedTheLeader() {
        var cluster = Cluster([1, 2, 3])
        cluster.elect(1, at: 3 * Self.second)
        var leader = cluster.members[1]!
        cluster.absorb(1, leader.read(42, now: cluster.now))
        cluster.members[1] = leader
        #expect(cluster.reads[1] == nil, "not before the followers answer")
        cluster.deliver()
        #expect(cluster.reads[1]?.map(\.id) == [42])
        #expect(cluster.reads[1]?.first?.index == cluster.members[1]?.commit)
        // A read at a follower fails (it names the leader).
        var follower = cluster.members[2]!
        cluster.absorb(2, follower.read(7, now: cluster.now))
        #expect(cluster.failedReads[2] == [7])
        // A leader cut off from its followers confirms nothing, and steps down.
        cluster.isolated = [1]
        leader = cluster.members[1]!
        cluster.absorb(1, leader.read(43, now: cluster.now))
        cluster.members[1] = leader
        cluster.deliver()
        #expect(cluster.reads[1]?.map(\.id) == [42])
        cluster.tick(1, at: cluster.now + 2 * Self.second)
        cluster.tick(1, at: cluster.now + 2 * Self.second)
        #expect(cluster.members[1]?.role == .follower, "CheckQuorum")
        #expect(cluster.failedReads[1] == [43])
    }

    /// A leader cut off with entries no one else has; a new leader overwrites them; back
    /// on the network, the old leader's conflicting tail is truncated (term back-off)
    /// and its log becomes the new leader's.
    @Test func aDivergedFollowerIsTruncatedToTheLeadersLog() throws {
        var cluster = Cluster([1, 2, 3])
        cluster.elect(1, at: 3 * Self.second)
        cluster.isolated = [1]
        for index in 0..<5 { _ = try cluster.propose(1, "lost\(index)") }
        cluster.deliver()
        cluster.elect(2, at: cluster.now + 3 * Self.second)
        #expect(cluster.members[2]?.role == .leader && cluster.members[2]?.term == 2)
        _ = try cluster.propose(2, "kept")
        cluster.deliver()
        cluster.isolated = []
        for step in 1...5 {
            cluster.tick(2, at: cluster.now + UInt64(step) * Self.second / 10)
            cluster.deliver()
        }
        #expect(cluster.members[1]?.role == .follower && cluster.members[1]?.leader == 2)
        #expect(cluster.disks[1]?.entries.map(\.term) == cluster.disks[2]?.entries.map(\.term))
        #expect(cluster.commands(1) == ["kept"], "the lost entries were never applied anywhere")
    }

    /// The order a shell relies on: what a vote or an acknowledgement promises is
    /// persisted by a directive before the message that carries it.
    @Test func aVoteAndAnAcknowledgementComeAfterTheirPersist() throws {
        var voter = Raft(
            configuration: Raft.Configuration(id: 2),
            storage: RaftStorage(),
            bootstrap: Membership(voters: [1, 2, 3]),
            seed: 1
        )
        _ = voter.start(now: 0)
        let request = RaftMessage.Body.requestVote(pre: false, lastIndex: 0, lastTerm: 0, transfer: false)
        let vote = voter.receive(RaftMessage(from: 1, to: 2, term: 1, body: request), now: 3 * Self.second)
        let persisted = vote.firstIndex { if case .persist(let state, _) = $0 { state.vote == 1 } else { false } }
        let sent = vote.firstIndex {
            if case .send(let message) = $0 { message.body == .vote(pre: false, granted: true) } else { false }
        }
        #expect(persisted != nil && sent != nil && persisted! < sent!, "\(vote)")
        let entry = LogEntry(term: 1, index: 1, kind: .command([1]))
        let body = RaftMessage.Body.append(prevIndex: 0, prevTerm: 0, entries: [entry], commit: 0, round: 0)
        let append = voter.receive(RaftMessage(from: 1, to: 2, term: 1, body: body), now: 3 * Self.second)
        let stored = append.firstIndex { if case .persist(_, let entries) = $0 { entries == [entry] } else { false } }
        let acknowledged = append.firstIndex {
            if case .send(let message) = $0, case .appendReply(true, 1, _, _) = message.body { true } else { false }
        }
        #expect(stored != nil && acknowledged != nil && stored! < acknowledged!, "\(append)")
    }

    @Test func aLaggingFollowerGetsTheSnapshot() throws {
        var cluster = Cluster([1, 2, 3])
        cluster.elect(1, at: 3 * Self.second)
        cluster.isolated = [3]
        for index in 0..<30 { _ = try cluster.propose(1, "e\(index)") }
        cluster.deliver()
        cluster.tick(1, at: cluster.now + Self.second / 5)
        cluster.deliver()
        #expect(cluster.members[1]?.commit == 31)
        var leader = cluster.members[1]!
        let snapshot = leader.snapshotTaken(index: 25, data: [1, 2, 3])
        cluster.members[1] = leader
        #expect(snapshot?.index == 25 && snapshot?.membership.voters == [1, 2, 3])
        cluster.isolated = []
        for step in 1...5 {
            cluster.tick(1, at: cluster.now + UInt64(step) * Self.second / 5)
            cluster.deliver()
        }
        #expect(cluster.installed[3]?.index == 25, "entries 1-25 are gone: the snapshot")
        #expect(cluster.members[3]?.lastIndex == 31 && cluster.members[3]?.commit == 31)
        #expect(cluster.commands(3) == (24..<30).map { "e\($0)" }, "index 26 on: e24-e29")
    }

    @Test func leadershipIsTransferredToACaughtUpFollower() throws {
        var cluster = Cluster([1, 2, 3])
        cluster.elect(1, at: 3 * Self.second)
        _ = try cluster.propose(1, "a")
        cluster.deliver()
        var leader = cluster.members[1]!
        cluster.absorb(1, try leader.transferLeadership(to: 2, now: cluster.now))
        cluster.members[1] = leader
        #expect(throws: Raft.Refusal.transferring) { try cluster.propose(1, "b") }
        cluster.deliver()
        #expect(cluster.members[2]?.role == .leader && cluster.members[2]?.term == 2)
        #expect(cluster.members[1]?.role == .follower && cluster.members[1]?.leader == 2)
    }

    @Test func membershipChangesOneAtATimeWithALearnerThatCatchesUpFirst() throws {
        var cluster = Cluster([1, 2, 3])
        cluster.elect(1, at: 3 * Self.second)
        for index in 0..<100 { _ = try cluster.propose(1, "e\(index)") }
        cluster.deliver()
        // A newcomer with an empty disk and no membership: it learns it from the log.
        var newcomer = Raft(
            configuration: Raft.Configuration(id: 4),
            storage: RaftStorage(),
            bootstrap: Membership(voters: []),
            seed: 9
        )
        cluster.absorb(4, newcomer.start(now: cluster.now))
        cluster.members[4] = newcomer
        var leader = cluster.members[1]!
        cluster.absorb(1, try leader.changeMembership(.addLearner(4), now: cluster.now))
        cluster.members[1] = leader
        #expect(throws: Raft.Refusal.membershipChangePending) {
            var again = cluster.members[1]!
            _ = try again.changeMembership(.remove(3), now: cluster.now)
        }
        // Member 4 hears nothing yet; the change commits through members 2 and 3.
        cluster.deliver { $0.to == 4 }
        cluster.tick(1, at: cluster.now + Self.second / 5)
        cluster.deliver { $0.to == 4 }
        #expect(throws: Raft.Refusal.notCaughtUp) {
            var again = cluster.members[1]!
            _ = try again.changeMembership(.promote(4), now: cluster.now)
        }
        for step in 1...10 {
            cluster.tick(1, at: cluster.now + UInt64(step) * Self.second / 10)
            cluster.deliver()
        }
        #expect(cluster.members[4]?.membership.learners == [4])
        #expect(cluster.members[4]?.role == .follower && cluster.members[4]?.lastIndex == cluster.members[1]?.lastIndex)
        leader = cluster.members[1]!
        cluster.absorb(1, try leader.changeMembership(.promote(4), now: cluster.now))
        cluster.members[1] = leader
        cluster.deliver()
        cluster.tick(1, at: cluster.now + Self.second / 5)
        cluster.deliver()
        #expect(cluster.members[1]?.membership.voters == [1, 2, 3, 4])
        #expect(cluster.members[4]?.membership.voters == [1, 2, 3, 4])
        // The leader removes itself: once that commits, it steps down.
        leader = cluster.members[1]!
        cluster.absorb(1, try leader.changeMembership(.remove(1), now: cluster.now))
        cluster.members[1] = leader
        cluster.deliver()
        cluster.tick(1, at: cluster.now + Self.second / 5)
        cluster.deliver()
        #expect(cluster.members[1]?.role == .follower)
        #expect(cluster.members[2]?.membership.voters == [2, 3, 4])
    }
}
