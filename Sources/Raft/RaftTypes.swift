/// A member of a Raft group (the agents use a hash of the node ID).
public typealias RaftID = UInt64

/// One entry of the replicated log.
public struct LogEntry: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        /// What a new leader appends so that an entry of its term commits (and with it
        /// everything before it: the current-term commit rule).
        case noop
        /// The workload's command, opaque to Raft.
        case command([UInt8])
        /// The group's membership from this entry on (in effect once appended).
        case membership(Membership)
    }

    public var term: UInt64
    public var index: UInt64
    public var kind: Kind

    public init(term: UInt64, index: UInt64, kind: Kind) {
        self.term = term
        self.index = index
        self.kind = kind
    }

    public var isMembership: Bool {
        if case .membership = kind { true } else { false }
    }
}

/// Who votes and who only follows (a learner catches up before it may vote).
public struct Membership: Equatable, Sendable {
    public private(set) var voters: [RaftID]
    public private(set) var learners: [RaftID]

    public init(voters: [RaftID], learners: [RaftID] = []) {
        self.voters = Array(Set(voters)).sorted()
        self.learners = Array(Set(learners).subtracting(voters)).sorted()
    }

    public var members: [RaftID] { (voters + learners).sorted() }
    public var quorum: Int { voters.count / 2 + 1 }
    public func isVoter(_ id: RaftID) -> Bool { voters.contains(id) }
    public func contains(_ id: RaftID) -> Bool { voters.contains(id) || learners.contains(id) }
}

/// One membership change at a time (Raft's single-server changes): a newcomer joins
/// as a learner, is promoted once it has caught up, and any member can be removed.
public enum MembershipChange: Equatable, Sendable {
    case addLearner(RaftID)
    case promote(RaftID)
    case remove(RaftID)
}

/// What must be on disk before a message that depends on it is sent.
public struct HardState: Equatable, Sendable {
    public var term: UInt64
    public var vote: RaftID?
    /// Not needed for safety; kept so a restarted member applies what it knew was
    /// committed without waiting for a leader.
    public var commit: UInt64

    public init(term: UInt64 = 0, vote: RaftID? = nil, commit: UInt64 = 0) {
        self.term = term
        self.vote = vote
        self.commit = commit
    }
}

/// The state machine's image at `index`, with the membership in effect there.
public struct Snapshot: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    public var membership: Membership
    public var data: [UInt8]

    public init(index: UInt64, term: UInt64, membership: Membership, data: [UInt8]) {
        self.index = index
        self.term = term
        self.membership = membership
        self.data = data
    }
}

/// What a member finds on its disk at start.
public struct RaftStorage: Equatable, Sendable {
    public var hardState: HardState
    public var snapshot: Snapshot?
    /// The entries after the snapshot, in order.
    public var entries: [LogEntry]

    public init(hardState: HardState = HardState(), snapshot: Snapshot? = nil, entries: [LogEntry] = []) {
        self.hardState = hardState
        self.snapshot = snapshot
        self.entries = entries
    }
}

public struct RaftMessage: Equatable, Sendable {
    public enum Body: Equatable, Sendable {
        /// A vote request; `pre`: PreVote (nobody changes term or vote for it),
        /// `transfer`: asked by the leader (TimeoutNow), so it overrides the lease.
        case requestVote(pre: Bool, lastIndex: UInt64, lastTerm: UInt64, transfer: Bool)
        case vote(pre: Bool, granted: Bool)
        /// Entries after `prevIndex`/`prevTerm`, or none (a heartbeat). `round`: the
        /// leader's heartbeat round, echoed back, for ReadIndex and CheckQuorum.
        case append(prevIndex: UInt64, prevTerm: UInt64, entries: [LogEntry], commit: UInt64, round: UInt64)
        /// `success`: the follower's log matches up to `index`. Otherwise `index` and
        /// `conflictTerm` say where to try next (conflict back-off).
        case appendReply(success: Bool, index: UInt64, conflictTerm: UInt64?, round: UInt64)
        case installSnapshot(Snapshot)
        /// The leader hands over: campaign now.
        case timeoutNow
    }

    public var from: RaftID
    public var to: RaftID
    public var term: UInt64
    public var body: Body

    public init(from: RaftID, to: RaftID, term: UInt64, body: Body) {
        self.from = from
        self.to = to
        self.term = term
        self.body = body
    }
}

/// A small, fast, seedable generator (SplitMix64): Raft draws its election timeouts
/// from the one it is given, so a simulation replays exactly.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
