import Raft

/// What a StatefulSet's Raft group replicates, entry by entry, so that every member
/// holds the same: the workload's key-value data, which node runs each ordinal, and
/// which pod leads the workload.
///
/// Pure and deterministic. The revision of a change is the index of the log entry that
/// made it, so revisions only grow; a compare-and-swap names the revision it expects
/// (etcd's `mod_revision`, Consul's `ModifyIndex`).
///
/// - Ordinals: a node claims an ordinal before it runs its pod, and only one node holds
///   a claim; the holder reports whether the pod is ready, and releases it when the pod
///   is gone. So an ordinal never runs on two nodes at once.
/// - The workload's leader is an ordinal whose pod is ready. Only the group's leader
///   elects, by a swap on the leadership's revision (no two elections race); the
///   revision of the election is the leadership's fencing token, which only grows.
public struct WorkloadState: Equatable, Sendable {
    public struct Value: Equatable, Sendable {
        public var data: [UInt8]
        /// The revision that created the key (since it last did not exist).
        public var createRevision: UInt64
        /// The revision of the latest change.
        public var modRevision: UInt64
        /// Changes since creation (1 when created).
        public var version: UInt64
    }

    /// Who runs one ordinal.
    public struct Claim: Equatable, Sendable {
        public var node: String
        public var ready: Bool
        /// The revision of the claim's latest change.
        public var revision: UInt64
    }

    /// A member of the group: its node, and where that node's agent listens for Raft.
    public struct Member: Equatable, Sendable {
        public var node: String
        public var address: String

        public init(node: String, address: String) {
            self.node = node
            self.address = address
        }
    }

    /// The workload's leader: an ordinal (nil: none), and the revision that elected it.
    public struct Leadership: Equatable, Sendable {
        public var ordinal: Int?
        public var revision: UInt64
    }

    /// What a write asks for.
    public enum Command: Equatable, Sendable {
        /// Sets `key`; with `ifRevision`, only if the key's `modRevision` is that
        /// (0: only if the key does not exist).
        case put(key: String, value: [UInt8], ifRevision: UInt64?)
        /// Removes `key`; with `ifRevision`, only if its `modRevision` is that.
        case delete(key: String, ifRevision: UInt64?)
        /// `node` runs `ordinal` from now on: only if no other node holds it.
        case claim(ordinal: Int, node: String)
        /// `node` no longer runs `ordinal` (a no-op when it does not hold it).
        case release(ordinal: Int, node: String)
        /// Whether `ordinal`'s pod is ready; only its holder says so.
        case ready(ordinal: Int, node: String, ready: Bool)
        /// `ordinal` leads (nil: nobody), if the leadership is still the one elected at
        /// `ifRevision`, and the ordinal is claimed and ready.
        case elect(ordinal: Int?, ifRevision: UInt64)
        /// Member `id` runs on `node` and listens at `address` (empty: it left).
        case member(id: RaftID, node: String, address: String)
    }

    public enum Outcome: Equatable, Sendable {
        /// Done at `revision`; `previous` is what the key held before (key-value only).
        case done(revision: UInt64, previous: Value?)
        /// The condition did not hold: nothing changed. `current` is what the key holds
        /// (key-value only).
        case conflict(current: Value?)
    }

    /// A key-value change, as a watch reports it.
    public struct Event: Equatable, Sendable {
        public enum Kind: String, Sendable { case put, delete }
        public var kind: Kind
        public var key: String
        /// The new value (put), nil for a delete.
        public var value: Value?
        public var revision: UInt64
    }

    public private(set) var values: [String: Value] = [:]
    /// What the keys take: their bytes, their values' and `keyOverhead` each.
    public private(set) var bytes = 0
    public private(set) var claims: [Int: Claim] = [:]

    /// What a key costs besides its bytes and its value's (revisions, bookkeeping).
    public static let keyOverhead = 64

    static func size(_ key: String, _ value: [UInt8]) -> Int { key.utf8.count + value.count + keyOverhead }
    public private(set) var leadership = Leadership(ordinal: nil, revision: 0)
    /// The group's members that joined it from another node, by member ID (a group's
    /// first member is not listed until it says where it listens).
    public private(set) var members: [RaftID: Member] = [:]
    /// The index of the last entry applied.
    public private(set) var revision: UInt64 = 0

    public init() {}

    /// Applies entry `index`'s command; returns its outcome and the key-value change
    /// it made, if any.
    public mutating func apply(_ command: Command, at index: UInt64) -> (Outcome, Event?) {
        precondition(index > revision, "entry \(index) applied after \(revision)")
        revision = index
        let done = Outcome.done(revision: index, previous: nil)
        switch command {
        case .put(let key, let data, let ifRevision):
            let previous = values[key]
            if let ifRevision, ifRevision != (previous?.modRevision ?? 0) { return (.conflict(current: previous), nil) }
            let value = Value(
                data: data,
                createRevision: previous?.createRevision ?? index,
                modRevision: index,
                version: (previous?.version ?? 0) + 1
            )
            values[key] = value
            bytes += Self.size(key, data) - (previous.map { Self.size(key, $0.data) } ?? 0)
            return (
                .done(revision: index, previous: previous), Event(kind: .put, key: key, value: value, revision: index)
            )
        case .delete(let key, let ifRevision):
            let previous = values[key]
            if let ifRevision, ifRevision != (previous?.modRevision ?? 0) { return (.conflict(current: previous), nil) }
            guard let previous else { return (.done(revision: index, previous: nil), nil) }
            values[key] = nil
            bytes -= Self.size(key, previous.data)
            return (
                .done(revision: index, previous: previous), Event(kind: .delete, key: key, value: nil, revision: index)
            )
        case .claim(let ordinal, let node):
            if let claim = claims[ordinal] {
                return (claim.node == node ? done : .conflict(current: nil), nil)
            }
            claims[ordinal] = Claim(node: node, ready: false, revision: index)
            return (done, nil)
        case .release(let ordinal, let node):
            guard claims[ordinal]?.node == node else { return (done, nil) }
            claims[ordinal] = nil
            if leadership.ordinal == ordinal { leadership = Leadership(ordinal: nil, revision: index) }
            return (done, nil)
        case .ready(let ordinal, let node, let ready):
            guard claims[ordinal]?.node == node else { return (.conflict(current: nil), nil) }
            claims[ordinal]?.ready = ready
            claims[ordinal]?.revision = index
            if !ready, leadership.ordinal == ordinal { leadership = Leadership(ordinal: nil, revision: index) }
            return (done, nil)
        case .elect(let ordinal, let ifRevision):
            guard ifRevision == leadership.revision, ordinal.map({ claims[$0]?.ready == true }) ?? true else {
                return (.conflict(current: nil), nil)
            }
            leadership = Leadership(ordinal: ordinal, revision: index)
            return (done, nil)
        case .member(let id, let node, let address):
            members[id] = address.isEmpty ? nil : Member(node: node, address: address)
            return (done, nil)
        }
    }

    /// An entry that is not a command (a leader's noop, a membership change).
    public mutating func skip(to index: UInt64) {
        precondition(index > revision, "entry \(index) applied after \(revision)")
        revision = index
    }

    /// The keys under `prefix`, in order.
    public func range(prefix: String) -> [(key: String, value: Value)] {
        values.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Whom the group's leader should elect: the current leader while it is ready,
    /// else the lowest ready ordinal (nil: none is ready). Nil when nothing changes.
    public var electionDue: Int?? {
        if let current = leadership.ordinal, claims[current]?.ready == true { return nil }
        let candidate = claims.filter(\.value.ready).keys.min()
        return candidate == leadership.ordinal ? nil : .some(candidate)
    }

    // MARK: bytes

    /// The state as a snapshot's data: revision u64; the keys (count u32, then per key
    /// in order: key, createRevision, modRevision, version, value); the claims (count
    /// u32, then ordinal u32, node, ready u8, revision u64); the leader (has one u8,
    /// ordinal u32, revision u64); the members (count u32, then id u64, node, address).
    public func snapshot() -> [UInt8] {
        var writer = ByteWriter()
        writer.u64(revision)
        writer.u32(UInt32(values.count))
        for (key, value) in values.sorted(by: { $0.key < $1.key }) {
            writer.string(key)
            writer.u64(value.createRevision)
            writer.u64(value.modRevision)
            writer.u64(value.version)
            writer.blob(value.data)
        }
        writer.u32(UInt32(claims.count))
        for (ordinal, claim) in claims.sorted(by: { $0.key < $1.key }) {
            writer.u32(UInt32(ordinal))
            writer.string(claim.node)
            writer.byte(claim.ready ? 1 : 0)
            writer.u64(claim.revision)
        }
        writer.byte(leadership.ordinal == nil ? 0 : 1)
        writer.u32(UInt32(leadership.ordinal ?? 0))
        writer.u64(leadership.revision)
        writer.u32(UInt32(members.count))
        for (id, member) in members.sorted(by: { $0.key < $1.key }) {
            writer.u64(id)
            writer.string(member.node)
            writer.string(member.address)
        }
        return writer.bytes
    }

    public init(snapshot bytes: [UInt8]) throws(WorkloadStateError) {
        var reader = ByteReader(bytes[...])
        let truncated = WorkloadStateError("a truncated snapshot")
        guard let revision = reader.u64(), let count = reader.u32() else { throw truncated }
        self.revision = revision
        var lastKey: String?
        for _ in 0..<count {
            guard let key = reader.string(), let create = reader.u64(), let modified = reader.u64(),
                let version = reader.u64(), let data = reader.blob()
            else { throw truncated }
            // In order and once each, as `snapshot()` writes them.
            guard lastKey.map({ $0 < key }) ?? true else { throw WorkloadStateError("keys out of order") }
            lastKey = key
            values[key] = Value(data: data, createRevision: create, modRevision: modified, version: version)
            self.bytes += Self.size(key, data)
        }
        guard let claimCount = reader.u32() else { throw truncated }
        var lastOrdinal: UInt32?
        for _ in 0..<claimCount {
            guard let ordinal = reader.u32(), let node = reader.string(), let ready = reader.byte(), ready <= 1,
                let changed = reader.u64()
            else { throw truncated }
            guard lastOrdinal.map({ $0 < ordinal }) ?? true else { throw WorkloadStateError("ordinals out of order") }
            lastOrdinal = ordinal
            claims[Int(ordinal)] = Claim(node: node, ready: ready == 1, revision: changed)
        }
        guard let hasLeader = reader.byte(), hasLeader <= 1, let ordinal = reader.u32(), let elected = reader.u64()
        else { throw truncated }
        leadership = Leadership(ordinal: hasLeader == 1 ? Int(ordinal) : nil, revision: elected)
        // A snapshot written before groups spanned nodes ends here: no members.
        let memberCount = reader.remaining == 0 ? 0 : reader.u32()
        guard let memberCount else { throw truncated }
        var lastID: RaftID?
        for _ in 0..<memberCount {
            guard let id = reader.u64(), let node = reader.string(), let address = reader.string(), !address.isEmpty
            else { throw truncated }
            guard lastID.map({ $0 < id }) ?? true else { throw WorkloadStateError("members out of order") }
            lastID = id
            members[id] = Member(node: node, address: address)
        }
        guard reader.remaining == 0 else { throw WorkloadStateError("bytes after the snapshot") }
    }
}

extension WorkloadState.Command {
    /// kind u8, then: 1 put (key, value, has condition u8, condition u64); 2 delete
    /// (key, has condition, condition); 3 claim and 4 release (ordinal u32, node);
    /// 5 ready (ordinal, node, ready u8); 6 elect (has ordinal u8, ordinal u32, ifRevision u64);
    /// 7 member (id u64, node, address).
    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .put(let key, let value, let ifRevision):
            writer.byte(1)
            writer.string(key)
            writer.blob(value)
            writer.byte(ifRevision == nil ? 0 : 1)
            writer.u64(ifRevision ?? 0)
        case .delete(let key, let ifRevision):
            writer.byte(2)
            writer.string(key)
            writer.byte(ifRevision == nil ? 0 : 1)
            writer.u64(ifRevision ?? 0)
        case .claim(let ordinal, let node), .release(let ordinal, let node):
            if case .claim = self { writer.byte(3) } else { writer.byte(4) }
            writer.u32(UInt32(ordinal))
            writer.string(node)
        case .ready(let ordinal, let node, let ready):
            writer.byte(5)
            writer.u32(UInt32(ordinal))
            writer.string(node)
            writer.byte(ready ? 1 : 0)
        case .elect(let ordinal, let ifRevision):
            writer.byte(6)
            writer.byte(ordinal == nil ? 0 : 1)
            writer.u32(UInt32(ordinal ?? 0))
            writer.u64(ifRevision)
        case .member(let id, let node, let address):
            writer.byte(7)
            writer.u64(id)
            writer.string(node)
            writer.string(address)
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(WorkloadStateError) {
        var reader = ByteReader(bytes[...])
        let command: Self?
        switch reader.byte() {
        case 1:
            if let key = reader.string(), let value = reader.blob(), let flag = reader.byte(), flag <= 1,
                let revision = reader.u64()
            {
                command = .put(key: key, value: value, ifRevision: flag == 1 ? revision : nil)
            } else {
                command = nil
            }
        case 2:
            if let key = reader.string(), let flag = reader.byte(), flag <= 1, let revision = reader.u64() {
                command = .delete(key: key, ifRevision: flag == 1 ? revision : nil)
            } else {
                command = nil
            }
        case 3, 4:
            let claim = bytes.first == 3
            if let ordinal = reader.u32(), let node = reader.string() {
                command =
                    claim ? .claim(ordinal: Int(ordinal), node: node) : .release(ordinal: Int(ordinal), node: node)
            } else {
                command = nil
            }
        case 5:
            if let ordinal = reader.u32(), let node = reader.string(), let ready = reader.byte(), ready <= 1 {
                command = .ready(ordinal: Int(ordinal), node: node, ready: ready == 1)
            } else {
                command = nil
            }
        case 6:
            if let has = reader.byte(), has <= 1, let ordinal = reader.u32(), let revision = reader.u64() {
                command = .elect(ordinal: has == 1 ? Int(ordinal) : nil, ifRevision: revision)
            } else {
                command = nil
            }
        case 7:
            if let id = reader.u64(), let node = reader.string(), let address = reader.string() {
                command = .member(id: id, node: node, address: address)
            } else {
                command = nil
            }
        default:
            throw WorkloadStateError("an unknown command")
        }
        guard let command, reader.remaining == 0 else { throw WorkloadStateError("a malformed command") }
        self = command
    }
}

public struct WorkloadStateError: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
