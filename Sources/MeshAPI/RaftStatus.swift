/// One Raft group as a member sees it: `GET /v1/raft` on the agent, `beectl raft status`.
/// Member IDs are hexadecimal (a node's ID: the first 8 bytes of the SHA-256 of its key).
public struct RaftGroupStatus: Codable, Sendable, Equatable {
    public struct Member: Codable, Sendable, Equatable {
        public var id: String
        public var voter: Bool
        /// The last index the leader knows the member holds (on the leader only).
        public var match: UInt64?
        /// How many entries the member is behind the leader's log (on the leader only).
        public var lag: UInt64?
        /// The member's node and where its agent listens for Raft, as the group
        /// recorded them (nil: not recorded yet, or a group on one node).
        public var node: String?
        public var address: String?

        public init(id: String, voter: Bool, match: UInt64?, lag: UInt64?, node: String? = nil, address: String? = nil)
        {
            self.id = id
            self.voter = voter
            self.match = match
            self.lag = lag
            self.node = node
            self.address = address
        }
    }

    /// Which node runs an ordinal, as the group decided.
    public struct Ordinal: Codable, Sendable, Equatable {
        public var ordinal: Int
        public var node: String
        public var ready: Bool

        public init(ordinal: Int, node: String, ready: Bool) {
            self.ordinal = ordinal
            self.node = node
            self.ready = ready
        }
    }

    /// `namespace/name` of the StatefulSet.
    public var group: String
    /// This member, and the node it runs on.
    public var member: String
    public var node: String
    public var role: String
    public var term: UInt64
    /// The group's leader (a member), if known.
    public var leader: String?
    public var commit: UInt64
    public var applied: UInt64
    public var lastIndex: UInt64
    public var snapshotIndex: UInt64
    /// The write-ahead log's size on disk.
    public var logBytes: Int
    public var members: [Member]
    public var ordinals: [Ordinal]
    /// The workload's leader (a pod), and the revision that elected it: its fencing token.
    public var workloadLeader: String?
    public var leaderRevision: UInt64
    /// Keys in the workload's store.
    public var keys: Int
    /// Why the member stopped, if it did (a disk that failed).
    public var failure: String?

    public init(
        group: String,
        member: String,
        node: String,
        role: String,
        term: UInt64,
        leader: String?,
        commit: UInt64,
        applied: UInt64,
        lastIndex: UInt64,
        snapshotIndex: UInt64,
        logBytes: Int,
        members: [Member],
        ordinals: [Ordinal],
        workloadLeader: String?,
        leaderRevision: UInt64,
        keys: Int,
        failure: String?
    ) {
        self.group = group
        self.member = member
        self.node = node
        self.role = role
        self.term = term
        self.leader = leader
        self.commit = commit
        self.applied = applied
        self.lastIndex = lastIndex
        self.snapshotIndex = snapshotIndex
        self.logBytes = logBytes
        self.members = members
        self.ordinals = ordinals
        self.workloadLeader = workloadLeader
        self.leaderRevision = leaderRevision
        self.keys = keys
        self.failure = failure
    }
}

/// The workload API's answers (`/v1/kv`, `/v1/leader` on 127.0.0.1:15020 in a
/// StatefulSet's pods). Values are base64 in JSON, as etcd's and Consul's are;
/// `?raw` gives a value's bytes alone.
public enum WorkloadAPI {
    /// One key.
    public struct Entry: Codable, Sendable, Equatable {
        public var key: String
        /// Base64.
        public var value: String
        public var createRevision: UInt64
        public var modRevision: UInt64
        public var version: UInt64

        public init(key: String, value: String, createRevision: UInt64, modRevision: UInt64, version: UInt64) {
            self.key = key
            self.value = value
            self.createRevision = createRevision
            self.modRevision = modRevision
            self.version = version
        }
    }

    /// `GET /v1/kv/PREFIX?prefix`: the keys under it, and the store's revision.
    public struct Range: Codable, Sendable, Equatable {
        public var entries: [Entry]
        public var revision: UInt64

        public init(entries: [Entry], revision: UInt64) {
            self.entries = entries
            self.revision = revision
        }
    }

    /// A put or delete: done (at `revision`) or not (`succeeded` false: the swap's
    /// revision did not match; `current` is what the key holds).
    public struct WriteResult: Codable, Sendable, Equatable {
        public var succeeded: Bool
        public var revision: UInt64?
        public var current: Entry?

        public init(succeeded: Bool, revision: UInt64?, current: Entry?) {
            self.succeeded = succeeded
            self.revision = revision
            self.current = current
        }
    }

    /// One line of a watch (`?watch`): a change of a key under the prefix.
    public struct Event: Codable, Sendable, Equatable {
        /// `put` or `delete`.
        public var type: String
        public var key: String
        /// Base64 (absent for a delete).
        public var value: String?
        public var revision: UInt64

        public init(type: String, key: String, value: String?, revision: UInt64) {
            self.type = type
            self.key = key
            self.value = value
            self.revision = revision
        }
    }

    /// `GET /v1/leader`: which pod leads the workload. `revision` grows with every
    /// election: a fencing token to hand to whatever the leader writes to.
    public struct Leader: Codable, Sendable, Equatable {
        /// The pod (nil: none is ready).
        public var leader: String?
        public var ordinal: Int?
        public var revision: UInt64
        /// Whether the calling pod leads.
        public var isSelf: Bool

        public init(leader: String?, ordinal: Int?, revision: UInt64, isSelf: Bool) {
            self.leader = leader
            self.ordinal = ordinal
            self.revision = revision
            self.isSelf = isSelf
        }

        private enum CodingKeys: String, CodingKey {
            case leader, ordinal, revision
            case isSelf = "self"
        }
    }
}
