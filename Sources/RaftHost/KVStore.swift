import Raft

/// The workload's key-value state: what every member of a group applies, entry by
/// entry, so that all of them hold the same. Pure and deterministic: the revision of a
/// change is the index of the log entry that made it, so revisions only grow, and a
/// compare-and-swap names the revision it expects (as etcd's `mod_revision` and
/// Consul's `ModifyIndex` do).
public struct KVStore: Equatable, Sendable {
    public struct Value: Equatable, Sendable {
        public var data: [UInt8]
        /// The revision that created the key (since it last did not exist).
        public var createRevision: UInt64
        /// The revision of the latest change.
        public var modRevision: UInt64
        /// Changes since creation (1 when created).
        public var version: UInt64
    }

    /// What a write asks for.
    public enum Command: Equatable, Sendable {
        /// Sets `key`; with `ifRevision`, only if the key's `modRevision` is that
        /// (0: only if the key does not exist).
        case put(key: String, value: [UInt8], ifRevision: UInt64?)
        /// Removes `key`; with `ifRevision`, only if its `modRevision` is that.
        case delete(key: String, ifRevision: UInt64?)
    }

    public enum Outcome: Equatable, Sendable {
        /// Done at `revision`; `previous` is what the key held before.
        case done(revision: UInt64, previous: Value?)
        /// The condition did not hold: nothing changed. `current` is what the key holds.
        case conflict(current: Value?)
    }

    /// A change, as a watch reports it.
    public struct Event: Equatable, Sendable {
        public enum Kind: String, Sendable { case put, delete }
        public var kind: Kind
        public var key: String
        /// The new value (put), nil for a delete.
        public var value: Value?
        public var revision: UInt64
    }

    public private(set) var values: [String: Value] = [:]
    /// The index of the last entry applied.
    public private(set) var revision: UInt64 = 0

    public init() {}

    /// Applies entry `index`'s command; returns its outcome and the change it made.
    public mutating func apply(_ command: Command, at index: UInt64) -> (Outcome, Event?) {
        precondition(index > revision, "entry \(index) applied after \(revision)")
        revision = index
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
            return (
                .done(revision: index, previous: previous), Event(kind: .put, key: key, value: value, revision: index)
            )
        case .delete(let key, let ifRevision):
            let previous = values[key]
            if let ifRevision, ifRevision != (previous?.modRevision ?? 0) { return (.conflict(current: previous), nil) }
            guard previous != nil else { return (.done(revision: index, previous: nil), nil) }
            values[key] = nil
            return (
                .done(revision: index, previous: previous), Event(kind: .delete, key: key, value: nil, revision: index)
            )
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

    // MARK: bytes

    /// The state as a snapshot's data: revision u64, count u32, then per key (in
    /// order) key, createRevision, modRevision, version, value.
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
        return writer.bytes
    }

    public init(snapshot bytes: [UInt8]) throws(KVStoreError) {
        var reader = ByteReader(bytes[...])
        guard let revision = reader.u64(), let count = reader.u32() else { throw KVStoreError("a truncated snapshot") }
        self.revision = revision
        for _ in 0..<count {
            guard let key = reader.string(), let create = reader.u64(), let modified = reader.u64(),
                let version = reader.u64(), let data = reader.blob()
            else { throw KVStoreError("a truncated snapshot") }
            values[key] = Value(data: data, createRevision: create, modRevision: modified, version: version)
        }
        guard reader.remaining == 0 else { throw KVStoreError("bytes after the snapshot") }
    }
}

extension KVStore.Command {
    /// kind u8 (1 put, 2 delete), key, [value], has condition u8, condition u64.
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
        }
        return writer.bytes
    }

    public init(decoding bytes: [UInt8]) throws(KVStoreError) {
        var reader = ByteReader(bytes[...])
        switch reader.byte() {
        case 1:
            guard let key = reader.string(), let value = reader.blob(), let flag = reader.byte(), flag <= 1,
                let revision = reader.u64(), reader.remaining == 0
            else { throw KVStoreError("a malformed put") }
            self = .put(key: key, value: value, ifRevision: flag == 1 ? revision : nil)
        case 2:
            guard let key = reader.string(), let flag = reader.byte(), flag <= 1, let revision = reader.u64(),
                reader.remaining == 0
            else { throw KVStoreError("a malformed delete") }
            self = .delete(key: key, ifRevision: flag == 1 ? revision : nil)
        default:
            throw KVStoreError("an unknown command")
        }
    }
}

public struct KVStoreError: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
