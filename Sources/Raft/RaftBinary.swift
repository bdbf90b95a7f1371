/// Little-endian binary writing of Raft's types, shared by the log's records
/// (`RaftPersistence`) and the messages between members (`RaftMessage+Wire`).
package struct ByteWriter {
    package var bytes: [UInt8] = []

    package init() {}

    package mutating func byte(_ value: UInt8) { bytes.append(value) }

    package mutating func u32(_ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    package mutating func u64(_ value: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    /// Length u32, then the bytes.
    package mutating func blob(_ value: [UInt8]) {
        u32(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    /// Length u32, then UTF-8.
    package mutating func string(_ value: String) { blob(Array(value.utf8)) }

    package mutating func entry(_ entry: LogEntry) {
        u64(entry.term)
        u64(entry.index)
        switch entry.kind {
        case .noop:
            byte(0)
        case .command(let command):
            byte(1)
            blob(command)
        case .membership(let membership):
            byte(2)
            self.membership(membership)
        }
    }

    package mutating func snapshot(_ snapshot: Snapshot) {
        u64(snapshot.index)
        u64(snapshot.term)
        membership(snapshot.membership)
        u64(UInt64(snapshot.data.count))
        bytes.append(contentsOf: snapshot.data)
    }

    package mutating func membership(_ membership: Membership) {
        for ids in [membership.voters, membership.learners] {
            u32(UInt32(ids.count))
            for id in ids { u64(id) }
        }
    }
}

/// The reading half of `ByteWriter`: every read returns nil when the bytes run out
/// or do not parse, never traps.
package struct ByteReader {
    private let bytes: ArraySlice<UInt8>
    private var position: Int

    package init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    package var remaining: Int { bytes.endIndex - position }

    package mutating func take(_ count: Int) -> [UInt8]? {
        guard count >= 0, count <= remaining else { return nil }
        defer { position += count }
        return Array(bytes[position..<position + count])
    }

    package mutating func byte() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { position += 1 }
        return bytes[position]
    }

    package mutating func u32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        defer { position += 4 }
        return bytes.withUnsafeBytes {
            UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: position - bytes.startIndex, as: UInt32.self))
        }
    }

    package mutating func u64() -> UInt64? {
        guard remaining >= 8 else { return nil }
        defer { position += 8 }
        return bytes.withUnsafeBytes {
            UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: position - bytes.startIndex, as: UInt64.self))
        }
    }

    package mutating func blob() -> [UInt8]? {
        guard let length = u32() else { return nil }
        return take(Int(length))
    }

    /// A string that is valid UTF-8.
    package mutating func string() -> String? {
        guard let bytes = blob() else { return nil }
        return String(validating: bytes, as: UTF8.self)
    }

    package mutating func entry() -> LogEntry? {
        guard let term = u64(), let index = u64(), let kind = byte() else { return nil }
        switch kind {
        case 0:
            return LogEntry(term: term, index: index, kind: .noop)
        case 1:
            guard let command = blob() else { return nil }
            return LogEntry(term: term, index: index, kind: .command(command))
        case 2:
            guard let membership = membership() else { return nil }
            return LogEntry(term: term, index: index, kind: .membership(membership))
        default:
            return nil
        }
    }

    /// A snapshot that takes the rest of the bytes.
    package mutating func snapshot() -> Snapshot? {
        guard let index = u64(), let term = u64(), let membership = membership(), let length = u64(),
            length == UInt64(remaining), let data = take(Int(length))
        else { return nil }
        return Snapshot(index: index, term: term, membership: membership, data: data)
    }

    /// `count` entries, which must follow one another.
    package mutating func entries(count: UInt32) -> [LogEntry]? {
        guard Int(count) <= remaining / 17 else { return nil }
        var entries: [LogEntry] = []
        entries.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let entry = entry() else { return nil }
            if let last = entries.last, entry.index != last.index &+ 1 { return nil }
            entries.append(entry)
        }
        return entries
    }

    package mutating func membership() -> Membership? {
        var lists: [[RaftID]] = []
        for _ in 0..<2 {
            guard let count = u32(), Int(count) <= remaining / 8 else { return nil }
            var ids: [RaftID] = []
            for _ in 0..<count {
                guard let id = u64() else { return nil }
                ids.append(id)
            }
            lists.append(ids)
        }
        return Membership(voters: lists[0], learners: lists[1])
    }
}
