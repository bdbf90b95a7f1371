/// One member of a Raft group as a pure state machine (`KademliaNode`'s shape): every
/// event goes in with the time, and what the member wants done comes out as
/// `Directive`s. It never reads a clock, touches a disk or a socket, or draws a random
/// number it was not seeded with, so a simulator runs groups deterministically and a
/// thin shell runs one for real.
///
/// The shell carries out the directives of one event in order, and a `persist`
/// completes (is fsynced) before the next directive: a vote or an acknowledgement is
/// sent only after what it promises is on disk.
///
/// | event | directives |
/// |---|---|
/// | `tick(now:)` | a PreVote campaign when the election timeout passed; the leader's heartbeats and its CheckQuorum |
/// | `receive(_:now:)` | votes, appends, replies; `persist` before any message that depends on it; `apply` once entries commit |
/// | `propose(_:now:)`, `propose(batch:now:)` | `persist` of the new entries, appends to the followers |
/// | `read(_:now:)` | `readReady` once a quorum confirmed this leader after the read came in (ReadIndex), or `readFailed` |
/// | `changeMembership(_:now:)` | one membership entry: a learner added, promoted, or a member removed |
/// | `transferLeadership(to:now:)` | the target caught up, then `timeoutNow` to it |
/// | `snapshotTaken(index:data:)` | the log compacted through `index` |
///
/// Elections use randomized timeouts, PreVote (a member that cannot win does not bump
/// the term) and CheckQuorum (a leader that has not heard from a quorum within an
/// election timeout steps down, and members that hear a leader ignore votes for a
/// while: the leader lease). Replication pipelines up to `maxInflight` appends per
/// follower and backs off by term on a conflict; a leader commits only an entry of its
/// own term (and with it those before).
public struct Raft: Sendable {
    public struct Configuration: Sendable {
        public var id: RaftID
        /// Nanoseconds throughout.
        public var heartbeatInterval: UInt64 = 100_000_000
        /// Each election timeout is drawn from `[electionTimeoutMin, electionTimeoutMax)`.
        public var electionTimeoutMin: UInt64 = 1_000_000_000
        public var electionTimeoutMax: UInt64 = 2_000_000_000
        public var preVote = true
        public var checkQuorum = true
        /// Appends in flight to one follower before the leader waits for replies.
        public var maxInflight = 64
        public var maxEntriesPerAppend = 64
        /// A learner is promoted only when it lags the leader by at most this many entries.
        public var promotionLag: UInt64 = 64

        public init(id: RaftID) { self.id = id }
    }

    public enum Role: String, Sendable {
        case follower, preCandidate, candidate, leader
    }

    public enum Directive: Equatable, Sendable {
        /// Write (and fsync) the hard state and `entries`, which replace any entries
        /// from `entries.first.index` on.
        case persist(HardState, entries: [LogEntry])
        /// A snapshot from the leader: keep it, restore the state machine from it, and
        /// replace the whole log with it (no entry before or after it stays).
        case installSnapshot(Snapshot)
        case send(RaftMessage)
        /// Committed entries, in order: apply them to the state machine.
        case apply([LogEntry])
        /// A linearizable read may be answered once the state machine applied `index`.
        case readReady(id: UInt64, index: UInt64)
        /// Not the leader (any more): ask `leader`, if known.
        case readFailed(id: UInt64, leader: RaftID?)
        case leaderChanged(RaftID?, term: UInt64)
        /// Call `tick(now:)` at this time.
        case wake(at: UInt64)
    }

    public enum Refusal: Error, Equatable, Sendable {
        case notLeader(RaftID?)
        /// A leadership transfer is under way.
        case transferring
        /// A membership change is not committed yet.
        case membershipChangePending
        /// The learner lags too far behind to vote.
        case notCaughtUp
        case noSuchMember
        case alreadyMember
    }

    private struct Progress: Sendable {
        enum State: Equatable, Sendable {
            /// One append at a time until the follower's log is found to match.
            case probe
            /// Appends pipelined, `next` advanced as they are sent.
            case replicate
            /// A snapshot ending at this index was sent.
            case snapshot(UInt64, sentAt: UInt64)
        }

        var match: UInt64 = 0
        var next: UInt64
        var state = State.probe
        /// `match` at the previous heartbeat: a follower that has appends in flight and
        /// moved no further in a heartbeat interval lost one, and is probed again.
        var matchAtHeartbeat: UInt64 = 0
        var paused = false
        /// The last index of each append in flight (replicate).
        var inflight: [UInt64] = []
    }

    private struct PendingRead: Sendable {
        var id: UInt64
        var index: UInt64
        var round: UInt64
    }

    public let configuration: Configuration
    public var id: RaftID { configuration.id }
    public private(set) var role = Role.follower
    public private(set) var term: UInt64
    public private(set) var vote: RaftID?
    public private(set) var leader: RaftID?
    public private(set) var commit: UInt64
    /// Entries handed out in `apply` up to here.
    public private(set) var applied: UInt64
    public private(set) var membership: Membership
    private var log: RaftLog
    /// The membership in effect at the snapshot (or the group's first).
    private var baseMembership: Membership
    /// The latest snapshot, sent to followers that lag behind it.
    private var snapshot: Snapshot?
    private var random: SeededGenerator

    private var now: UInt64 = 0
    private var electionDeadline: UInt64 = 0
    private var heartbeatDeadline: UInt64 = 0
    private var quorumCheckDeadline: UInt64 = 0
    /// When a leader of the current term was last heard (the lease against votes).
    private var leaderContact: UInt64?
    private var votes: [RaftID: Bool] = [:]
    private var progress: [RaftID: Progress] = [:]
    private var recentlyActive: Set<RaftID> = []
    private var round: UInt64 = 0
    private var roundAcknowledged: [RaftID: UInt64] = [:]
    private var pendingReads: [PendingRead] = []
    /// Reads that came before this leader committed an entry of its term.
    private var earlyReads: [UInt64] = []
    private var transferee: (id: RaftID, deadline: UInt64)?
    private var pendingMembershipIndex: UInt64 = 0
    /// This campaign was asked for by the leader (TimeoutNow).
    private var transferCampaign = false
    /// When this member last became a pre-candidate.
    private var preCampaignStarted: UInt64 = 0
    private var out: [Directive] = []

    /// A member as its disk left it. `bootstrap` is the group's first membership (the
    /// same on every first member); a member that joins later starts with none and
    /// learns it from the leader.
    public init(configuration: Configuration, storage: RaftStorage, bootstrap: Membership, seed: UInt64) {
        precondition(
            configuration.electionTimeoutMin < configuration.electionTimeoutMax,
            "electionTimeoutMin must be below electionTimeoutMax"
        )
        self.configuration = configuration
        random = SeededGenerator(seed: seed ^ configuration.id)
        term = storage.hardState.term
        vote = storage.hardState.vote
        if let snapshot = storage.snapshot {
            log = RaftLog(snapshotIndex: snapshot.index, snapshotTerm: snapshot.term, entries: storage.entries)
            baseMembership = snapshot.membership
            self.snapshot = snapshot
        } else {
            log = RaftLog(entries: storage.entries)
            baseMembership = bootstrap
        }
        applied = log.snapshotIndex
        commit = min(max(storage.hardState.commit, log.snapshotIndex), log.lastIndex)
        membership = log.membership(atOrBefore: log.lastIndex) ?? baseMembership
    }

    // MARK: reading

    public var lastIndex: UInt64 { log.lastIndex }
    public var lastTerm: UInt64 { log.lastTerm }
    public var snapshotIndex: UInt64 { log.snapshotIndex }
    public var hardState: HardState { HardState(term: term, vote: vote, commit: commit) }

    /// A leader whose commit index has reached an entry of its own term: it serves.
    public var leadsWithCommit: Bool { role == .leader && log.term(at: commit) == term }

    /// What the leader knows of each follower: `(match, next)`.
    public var followers: [RaftID: (match: UInt64, next: UInt64)] {
        progress.mapValues { ($0.match, $0.next) }
    }

    public func entry(at index: UInt64) -> LogEntry? { log.entry(at: index) }

    // MARK: events

    /// The member starts (or restarts): its election timer runs, and what it knew was
    /// committed is applied. The only voter of its group leads at once.
    public mutating func start(now: UInt64) -> [Directive] {
        begin(now)
        resetElectionTimer()
        applyCommitted()
        // The only voter has nobody to wait for: it leads at once (a group of one).
        if membership.voters == [id] { campaign(pre: false, transfer: false) }
        return finish()
    }

    public mutating func tick(now: UInt64) -> [Directive] {
        begin(now)
        if role == .leader {
            if now >= heartbeatDeadline {
                heartbeatDeadline = now + configuration.heartbeatInterval
                heartbeat()
            }
            if configuration.checkQuorum, now >= quorumCheckDeadline {
                quorumCheckDeadline = now + configuration.electionTimeoutMin
                let active = membership.voters.filter { $0 == id || recentlyActive.contains($0) }.count
                recentlyActive = []
                if active < membership.quorum { becomeFollower(term: term, leader: nil) }
            }
            if let transfer = transferee, now >= transfer.deadline { transferee = nil }
        } else if now >= electionDeadline {
            if membership.isVoter(id) {
                campaign(pre: configuration.preVote, transfer: false)
            } else {
                resetElectionTimer()
            }
        } else if role == .preCandidate || role == .candidate, now >= heartbeatDeadline {
            // A lost request or answer should not cost a whole election timeout: ask
            // the voters that have not answered again (a vote is given again to the
            // same candidate, and PreVote changes nothing).
            heartbeatDeadline = now + configuration.heartbeatInterval
            requestVotes(pre: role == .preCandidate, transfer: transferCampaign)
        }
        return finish()
    }

    public mutating func receive(_ message: RaftMessage, now: UInt64) -> [Directive] {
        begin(now)
        handle(message)
        return finish()
    }

    /// Appends a command; the leader only.
    public mutating func propose(_ command: [UInt8], now: UInt64) throws(Refusal) -> (index: UInt64, [Directive]) {
        let (first, directives) = try propose(batch: [command], now: now)
        return (first, directives)
    }

    /// Appends commands at consecutive indexes from the returned one, with one persist
    /// and one append per follower for all of them (what a shell collects in one turn
    /// of its loop); the leader only.
    public mutating func propose(batch commands: [[UInt8]], now: UInt64) throws(Refusal) -> (
        first: UInt64, [Directive]
    ) {
        precondition(!commands.isEmpty, "an empty batch proposed")
        guard role == .leader else { throw .notLeader(leader) }
        guard transferee == nil else { throw .transferring }
        begin(now)
        let first = log.lastIndex + 1
        let entries = commands.enumerated().map {
            LogEntry(term: term, index: first + UInt64($0.offset), kind: .command($0.element))
        }
        log.append(entries)
        persistState(entries)
        for member in progress.keys.sorted() { sendAppend(to: member) }
        maybeCommit()
        return (first, finish())
    }

    /// A linearizable read (ReadIndex): answered by `readReady` once a quorum has
    /// confirmed this member still leads after the read arrived, without a log entry.
    public mutating func read(_ id: UInt64, now: UInt64) -> [Directive] {
        read(batch: [id], now: now)
    }

    /// Reads that came in together (in one turn of a shell's loop): one heartbeat
    /// round confirms them all.
    public mutating func read(batch ids: [UInt64], now: UInt64) -> [Directive] {
        begin(now)
        startReads(ids)
        return finish()
    }

    public mutating func changeMembership(_ change: MembershipChange, now: UInt64) throws(Refusal) -> [Directive] {
        guard role == .leader else { throw .notLeader(leader) }
        guard pendingMembershipIndex <= commit else { throw .membershipChangePending }
        var voters = membership.voters
        var learners = membership.learners
        switch change {
        case .addLearner(let member):
            guard !membership.contains(member) else { throw .alreadyMember }
            learners.append(member)
        case .promote(let member):
            guard membership.learners.contains(member) else { throw .noSuchMember }
            guard let match = progress[member]?.match, match + configuration.promotionLag >= log.lastIndex else {
                throw .notCaughtUp
            }
            learners.removeAll { $0 == member }
            voters.append(member)
        case .remove(let member):
            guard membership.contains(member) else { throw .noSuchMember }
            voters.removeAll { $0 == member }
            learners.removeAll { $0 == member }
            guard !voters.isEmpty else { throw .noSuchMember }
        }
        begin(now)
        pendingMembershipIndex = appendAsLeader(.membership(Membership(voters: voters, learners: learners)))
        return finish()
    }

    public mutating func transferLeadership(to target: RaftID, now: UInt64) throws(Refusal) -> [Directive] {
        guard role == .leader else { throw .notLeader(leader) }
        guard target != id, membership.isVoter(target), progress[target] != nil else { throw .noSuchMember }
        begin(now)
        transferee = (target, now + configuration.electionTimeoutMin)
        if progress[target]?.match == log.lastIndex {
            send(to: target, .timeoutNow)
        } else {
            sendAppend(to: target)
        }
        return finish()
    }

    /// The state machine was saved at `index` (applied already): the log up to it goes.
    /// Returns the snapshot to keep (with its term and membership), nil when `index`
    /// is not past the last one or not applied yet.
    @discardableResult
    public mutating func snapshotTaken(index: UInt64, data: [UInt8]) -> Snapshot? {
        guard index > log.snapshotIndex, index <= applied, let term = log.term(at: index) else { return nil }
        let membership = log.membership(atOrBefore: index) ?? baseMembership
        let taken = Snapshot(index: index, term: term, membership: membership, data: data)
        snapshot = taken
        baseMembership = membership
        log.compact(through: index, term: term)
        return taken
    }

    // MARK: the event loop's edges

    private mutating func begin(_ now: UInt64) {
        self.now = now
        out = []
    }

    private mutating func finish() -> [Directive] {
        let wake: UInt64
        switch role {
        case .leader:
            wake = min(
                heartbeatDeadline,
                configuration.checkQuorum ? quorumCheckDeadline : .max,
                transferee?.deadline ?? .max
            )
        case .preCandidate, .candidate:
            wake = min(electionDeadline, heartbeatDeadline)
        case .follower:
            wake = electionDeadline
        }
        out.append(.wake(at: wake))
        defer { out = [] }
        return out
    }

    private mutating func resetElectionTimer() {
        let span = configuration.electionTimeoutMax - configuration.electionTimeoutMin
        electionDeadline = now + configuration.electionTimeoutMin + random.next() % span
    }

    private mutating func persistState(_ entries: [LogEntry] = []) {
        out.append(.persist(hardState, entries: entries))
    }

    private mutating func send(to member: RaftID, _ body: RaftMessage.Body, term: UInt64? = nil) {
        out.append(.send(RaftMessage(from: id, to: member, term: term ?? self.term, body: body)))
    }

    private mutating func setLeader(_ member: RaftID?) {
        guard member != leader else { return }
        leader = member
        out.append(.leaderChanged(member, term: term))
    }

    // MARK: roles

    private mutating func becomeFollower(term newTerm: UInt64, leader member: RaftID?) {
        if newTerm > term {
            term = newTerm
            vote = nil
            persistState()
        }
        role = .follower
        votes = [:]
        progress = [:]
        transferee = nil
        leaderContact = member == nil ? nil : now
        setLeader(member)
        failReads()
        resetElectionTimer()
    }

    private mutating func campaign(pre: Bool, transfer: Bool) {
        votes = [id: true]
        transferCampaign = transfer
        setLeader(nil)
        leaderContact = nil
        if pre {
            if role != .preCandidate { preCampaignStarted = now }
            role = .preCandidate
        } else {
            role = .candidate
            term += 1
            vote = id
            persistState()
        }
        resetElectionTimer()
        heartbeatDeadline = now + configuration.heartbeatInterval
        if membership.voters.count == 1 {
            if pre { campaign(pre: false, transfer: transfer) } else { becomeLeader() }
            return
        }
        requestVotes(pre: pre, transfer: transfer)
    }

    /// Asks the voters that have not granted: a real vote of those that have not
    /// answered (a refusal in this term is final), a pre-vote of every one that has
    /// not granted it (a refusal under a leader's lease may become a grant once the
    /// lease runs out).
    private mutating func requestVotes(pre: Bool, transfer: Bool) {
        for member in membership.voters where member != id && (pre ? votes[member] != true : votes[member] == nil) {
            send(
                to: member,
                .requestVote(pre: pre, lastIndex: log.lastIndex, lastTerm: log.lastTerm, transfer: transfer),
                term: pre ? term + 1 : term
            )
        }
    }

    private mutating func becomeLeader() {
        role = .leader
        votes = [:]
        transferee = nil
        setLeader(id)
        progress = [:]
        for member in membership.members where member != id {
            progress[member] = Progress(next: log.lastIndex + 1)
        }
        recentlyActive = []
        roundAcknowledged = [:]
        quorumCheckDeadline = now + configuration.electionTimeoutMin
        heartbeatDeadline = now + configuration.heartbeatInterval
        // Every membership entry in the log may still be uncommitted: no change until
        // this leader's first entry commits.
        pendingMembershipIndex = log.lastIndex + 1
        appendAsLeader(.noop)
    }

    // MARK: messages

    private mutating func handle(_ message: RaftMessage) {
        if message.term > term {
            switch message.body {
            case .requestVote(pre: true, _, _, _), .vote(pre: true, granted: true):
                break  // PreVote changes nobody's term
            case .requestVote(pre: false, _, _, let transfer):
                if inLease, !transfer { return }  // a leader is alive: ignore the disruption
                becomeFollower(term: message.term, leader: nil)
            case .append, .installSnapshot, .timeoutNow:
                becomeFollower(term: message.term, leader: message.from)
            case .vote, .appendReply:
                becomeFollower(term: message.term, leader: nil)
            }
        } else if message.term < term {
            switch message.body {
            case .append, .installSnapshot:
                // A deposed leader: our term tells it to step down.
                send(to: message.from, .appendReply(success: false, index: 0, conflictTerm: nil, round: 0))
            case .requestVote(let pre, _, _, _):
                // A candidate behind: our term tells it.
                send(to: message.from, .vote(pre: pre, granted: false))
            default:
                break
            }
            return
        }
        switch message.body {
        case .requestVote(let pre, let lastIndex, let lastTerm, let transfer):
            handleVoteRequest(message, pre: pre, lastIndex: lastIndex, lastTerm: lastTerm, transfer: transfer)
        case .vote(let pre, let granted):
            // A pre-vote answers the campaign for the next term, a vote this term's:
            // a late answer to an earlier campaign counts for nothing.
            guard message.term == (pre ? term + 1 : term) else { return }
            handleVote(from: message.from, pre: pre, granted: granted)
        case .append(let prevIndex, let prevTerm, let entries, let commit, let round):
            handleAppend(
                from: message.from,
                prevIndex: prevIndex,
                prevTerm: prevTerm,
                entries: entries,
                leaderCommit: commit,
                round: round
            )
        case .appendReply(let success, let index, let conflictTerm, let round):
            handleAppendReply(
                from: message.from,
                success: success,
                index: index,
                conflictTerm: conflictTerm,
                round: round
            )
        case .installSnapshot(let snapshot):
            handleSnapshot(from: message.from, snapshot)
        case .timeoutNow:
            if membership.isVoter(id), role != .leader { campaign(pre: false, transfer: true) }
        }
    }

    /// A leader was heard within the shortest election timeout: votes are refused.
    private var inLease: Bool {
        guard configuration.checkQuorum, let contact = leaderContact, leader != nil else { return false }
        return now < contact + configuration.electionTimeoutMin
    }

    private mutating func handleVoteRequest(
        _ message: RaftMessage,
        pre: Bool,
        lastIndex: UInt64,
        lastTerm: UInt64,
        transfer: Bool
    ) {
        let upToDate = lastTerm > log.lastTerm || (lastTerm == log.lastTerm && lastIndex >= log.lastIndex)
        // A pre-vote asks about a later term, where this member has not voted yet.
        let free = vote == nil || vote == message.from || (pre && message.term > term)
        // Two members that timed out together would each win the other's pre-vote and
        // split the real vote: between pre-candidates with equal logs, the higher ID
        // gets it.
        // Only while both campaigns are new: a pre-candidate that cannot win by itself
        // must not hold up the others for good.
        let sameLog = lastTerm == log.lastTerm && lastIndex == log.lastIndex
        let racing =
            pre && role == .preCandidate && sameLog
            && now < preCampaignStarted + 2 * configuration.heartbeatInterval
        let yields = !racing || message.from > id
        // Only a member of its own membership votes: one that lost its log (it knows
        // no membership at all) could help elect a leader without the committed
        // entries. A learner does (its log may not hold its promotion yet, which the
        // candidate's does: the candidate counts only its own voters).
        let granted =
            membership.contains(id) && upToDate && free && (transfer || !inLease) && role != .leader && yields
        if granted, !pre {
            vote = message.from
            persistState()
            resetElectionTimer()
        }
        send(to: message.from, .vote(pre: pre, granted: granted), term: granted && pre ? message.term : term)
    }

    private mutating func handleVote(from member: RaftID, pre: Bool, granted: Bool) {
        guard (pre && role == .preCandidate) || (!pre && role == .candidate) else { return }
        guard membership.isVoter(member) else { return }
        votes[member] = granted
        let yes = votes.values.filter { $0 }.count
        let no = votes.values.filter { !$0 }.count
        if yes >= membership.quorum {
            if pre { campaign(pre: false, transfer: false) } else { becomeLeader() }
        } else if !pre, membership.voters.count - no < membership.quorum {
            // Lost this term. A pre-candidate asks again instead (PreVote changes no
            // term, and refusals under a lease change once it runs out).
            becomeFollower(term: term, leader: nil)
        }
    }

    private mutating func handleAppend(
        from member: RaftID,
        prevIndex: UInt64,
        prevTerm: UInt64,
        entries: [LogEntry],
        leaderCommit: UInt64,
        round: UInt64
    ) {
        precondition(role != .leader, "two leaders in term \(term): \(id) and \(member)")
        if role != .follower || leader != member { becomeFollower(term: term, leader: member) }
        leaderContact = now
        resetElectionTimer()
        if prevIndex < commit {
            // What is committed here matches; the leader resends from after it.
            send(to: member, .appendReply(success: true, index: commit, conflictTerm: nil, round: round))
            return
        }
        guard log.term(at: prevIndex) == prevTerm else {
            if prevIndex > log.lastIndex {
                send(
                    to: member,
                    .appendReply(success: false, index: log.lastIndex + 1, conflictTerm: nil, round: round)
                )
            } else {
                let conflict = log.term(at: prevIndex) ?? 0
                let first = log.firstIndex(ofTerm: conflict, atOrBefore: prevIndex)
                send(to: member, .appendReply(success: false, index: first, conflictTerm: conflict, round: round))
            }
            return
        }
        var fresh: ArraySlice<LogEntry> = []
        var truncated = false
        for (position, entry) in entries.enumerated() {
            if let existing = log.term(at: entry.index), existing == entry.term { continue }
            if entry.index <= log.lastIndex {
                precondition(entry.index > commit, "a committed entry conflicts with the leader's")
                log.truncate(after: entry.index - 1)
                truncated = true
            }
            fresh = entries[position...]
            break
        }
        if !fresh.isEmpty {
            log.append(Array(fresh))
            if truncated || fresh.contains(where: \.isMembership) {
                membership = log.membership(atOrBefore: log.lastIndex) ?? baseMembership
            }
            persistState(Array(fresh))
        }
        let lastNew = prevIndex + UInt64(entries.count)
        let newCommit = min(leaderCommit, lastNew)
        if newCommit > commit {
            commit = newCommit
            applyCommitted()
        }
        send(to: member, .appendReply(success: true, index: lastNew, conflictTerm: nil, round: round))
    }

    private mutating func handleSnapshot(from member: RaftID, _ snapshot: Snapshot) {
        precondition(role != .leader, "two leaders in term \(term): \(id) and \(member)")
        if role != .follower || leader != member { becomeFollower(term: term, leader: member) }
        leaderContact = now
        resetElectionTimer()
        guard snapshot.index > commit else {
            send(to: member, .appendReply(success: true, index: commit, conflictTerm: nil, round: 0))
            return
        }
        if log.term(at: snapshot.index) == snapshot.term {
            // A snapshot this log already holds (a late or duplicated message): the
            // entries after it stay; they may have been acknowledged.
            commit = snapshot.index
            applyCommitted()
            send(to: member, .appendReply(success: true, index: snapshot.index, conflictTerm: nil, round: 0))
            return
        }
        log = RaftLog(snapshotIndex: snapshot.index, snapshotTerm: snapshot.term)
        baseMembership = snapshot.membership
        membership = snapshot.membership
        self.snapshot = snapshot
        commit = snapshot.index
        applied = snapshot.index
        out.append(.installSnapshot(snapshot))
        persistState()
        send(to: member, .appendReply(success: true, index: snapshot.index, conflictTerm: nil, round: 0))
    }

    private mutating func handleAppendReply(
        from member: RaftID,
        success: Bool,
        index: UInt64,
        conflictTerm: UInt64?,
        round: UInt64
    ) {
        guard role == .leader, var state = progress[member] else { return }
        recentlyActive.insert(member)
        if round > roundAcknowledged[member] ?? 0 { roundAcknowledged[member] = round }
        var advanced = false
        if success {
            if index > state.match {
                state.match = index
                advanced = true
            }
            switch state.state {
            case .probe:
                state.state = .replicate
                state.next = state.match + 1
                state.inflight = []
            case .snapshot(let at, _):
                if state.match >= at {
                    state.state = .replicate
                    state.next = state.match + 1
                    state.inflight = []
                }
            case .replicate:
                state.inflight.removeAll { $0 <= index }
                state.next = max(state.next, state.match + 1)
            }
            state.paused = false
            progress[member] = state
            if advanced { maybeCommit() }
            if transferee?.id == member, state.match == log.lastIndex { send(to: member, .timeoutNow) }
            sendAppend(to: member)
        } else if case .snapshot = state.state {
            // The follower is waiting for the snapshot; an older append's reply.
        } else {
            var next = index
            if let conflictTerm, let last = log.lastIndex(ofTerm: conflictTerm, atOrBefore: index) {
                next = last + 1
            }
            next = max(min(next, state.next), state.match + 1)
            // A rejection that teaches nothing (a late reply to an earlier append)
            // changes nothing: the next heartbeat probes again.
            guard next < state.next || state.state == .replicate else {
                checkReads()
                return
            }
            state.next = next
            state.state = .probe
            state.paused = false
            state.inflight = []
            progress[member] = state
            sendAppend(to: member)
        }
        checkReads()
    }

    // MARK: the leader's work

    @discardableResult
    private mutating func appendAsLeader(_ kind: LogEntry.Kind) -> UInt64 {
        let entry = LogEntry(term: term, index: log.lastIndex + 1, kind: kind)
        log.append([entry])
        if case .membership(let next) = kind {
            membership = next
            for member in next.members where member != id && progress[member] == nil {
                progress[member] = Progress(next: entry.index)
            }
            for member in progress.keys where !next.contains(member) { progress[member] = nil }
        }
        persistState([entry])
        for member in progress.keys.sorted() { sendAppend(to: member) }
        maybeCommit()
        return entry.index
    }

    /// Sends what `member` lacks, as far as its flow control allows.
    private mutating func sendAppend(to member: RaftID) {
        while var state = progress[member] {
            switch state.state {
            case .snapshot(_, let sentAt):
                guard now >= sentAt + configuration.electionTimeoutMin else { return }
                state.state = .probe  // the snapshot went unanswered: again
                state.next = log.snapshotIndex + 1
                state.paused = false
            case .probe where state.paused:
                return
            case .replicate where state.inflight.count >= configuration.maxInflight:
                return
            case .probe, .replicate:
                break
            }
            let previous = state.next - 1
            guard let previousTerm = log.term(at: previous) else {
                guard let snapshot else { return }
                state.state = .snapshot(snapshot.index, sentAt: now)
                progress[member] = state
                send(to: member, .installSnapshot(snapshot))
                return
            }
            let entries = log.entries(from: state.next, limit: configuration.maxEntriesPerAppend)
            if state.state == .replicate, entries.isEmpty {
                progress[member] = state
                return  // nothing new: heartbeats carry the commit
            }
            send(
                to: member,
                .append(prevIndex: previous, prevTerm: previousTerm, entries: entries, commit: commit, round: round)
            )
            if state.state == .probe {
                state.paused = true
                progress[member] = state
                return
            }
            if let last = entries.last {
                state.next = last.index + 1
                state.inflight.append(last.index)
            }
            progress[member] = state
            if entries.isEmpty { return }
        }
    }

    /// Every follower hears from the leader: its commit, the read round, and for one
    /// that is probing, the probe again.
    /// `readRound`: a round for reads, sent whenever reads come; only the timer's
    /// heartbeats judge whether appends were lost (no progress in an interval).
    private mutating func heartbeat(readRound: Bool = false) {
        for member in progress.keys.sorted() {
            guard var state = progress[member] else { continue }
            switch state.state {
            case .probe:
                state.paused = false
                progress[member] = state
                sendAppend(to: member)
            case .snapshot:
                sendAppend(to: member)
            case .replicate where !readRound && state.match < log.lastIndex && state.match == state.matchAtHeartbeat:
                state.state = .probe
                state.next = state.match + 1
                state.inflight = []
                state.paused = false
                progress[member] = state
                sendAppend(to: member)
            case .replicate:
                if !readRound { progress[member]?.matchAtHeartbeat = state.match }
                let previous = state.match
                guard let previousTerm = log.term(at: previous) else {
                    sendAppend(to: member)
                    continue
                }
                send(
                    to: member,
                    .append(
                        prevIndex: previous,
                        prevTerm: previousTerm,
                        entries: [],
                        commit: min(commit, state.match),
                        round: round
                    )
                )
            }
        }
    }

    private mutating func maybeCommit() {
        guard role == .leader else { return }
        let matches = membership.voters.map { $0 == id ? log.lastIndex : progress[$0]?.match ?? 0 }
            .sorted(by: >)
        guard !matches.isEmpty else { return }
        let candidate = matches[membership.quorum - 1]
        guard candidate > commit, log.term(at: candidate) == term else { return }
        commit = candidate
        applyCommitted()
        if !earlyReads.isEmpty {
            let reads = earlyReads
            earlyReads = []
            startReads(reads)
        }
        if !membership.contains(id), pendingMembershipIndex <= commit {
            becomeFollower(term: term, leader: nil)  // this leader removed itself
        }
        checkReads()  // a membership change may make the quorum
    }

    private mutating func applyCommitted() {
        guard commit > applied else { return }
        let entries = log.entries(from: applied + 1, limit: Int(commit - applied))
        guard !entries.isEmpty else { return }
        applied = entries.last!.index
        out.append(.apply(entries))
    }

    // MARK: reads

    /// Starts `reads` together: those that wait for a quorum share one new heartbeat
    /// round, sent at once.
    private mutating func startReads(_ reads: [UInt64]) {
        let before = pendingReads.count
        for read in reads { startRead(read) }
        guard pendingReads.count > before else { return }
        round += 1
        heartbeat(readRound: true)
    }

    /// Answers at once or defers `read`, or notes it for the next round (which
    /// `startReads` then begins).
    private mutating func startRead(_ read: UInt64) {
        guard role == .leader else {
            out.append(.readFailed(id: read, leader: leader))
            return
        }
        guard log.term(at: commit) == term else {
            earlyReads.append(read)
            return
        }
        if membership.voters == [id] {
            out.append(.readReady(id: read, index: commit))
            return
        }
        pendingReads.append(PendingRead(id: read, index: commit, round: round + 1))
    }

    private mutating func checkReads() {
        while let read = pendingReads.first {
            let confirmed = membership.voters.filter { $0 == id || (roundAcknowledged[$0] ?? 0) >= read.round }.count
            guard confirmed >= membership.quorum else { return }
            pendingReads.removeFirst()
            out.append(.readReady(id: read.id, index: read.index))
        }
    }

    private mutating func failReads() {
        for read in pendingReads { out.append(.readFailed(id: read.id, leader: leader)) }
        for read in earlyReads { out.append(.readFailed(id: read, leader: leader)) }
        pendingReads = []
        earlyReads = []
    }
}
