import Raft

/// What one record of a group's files holds.
///
/// | kind | payload (integers little-endian) |
/// | --- | --- |
/// | 1 batch | flags u8 (bit 0: a hard state follows), [term u64, has vote u8, vote u64, commit u64], count u32, entries |
/// | 2 snapshot | index u64, term u64, membership, data length u64, data |
///
/// An entry is term u64, index u64 and a kind: 0 no-op; 1 command (length u32, bytes);
/// 2 membership. A membership is voters (count u32, ids u64) then learners (the same).
/// A batch is one `Raft.Directive.persist` (or several that one sync covers): its
/// entries replace any from the first one's index on.
enum RaftRecord: Equatable {
    case batch(HardState?, entries: [LogEntry])
    case snapshot(Snapshot)

    private static let batchKind: UInt8 = 1
    private static let snapshotKind: UInt8 = 2

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .batch(let hardState, let entries):
            writer.byte(Self.batchKind)
            writer.byte(hardState == nil ? 0 : 1)
            if let hardState {
                writer.u64(hardState.term)
                writer.byte(hardState.vote == nil ? 0 : 1)
                writer.u64(hardState.vote ?? 0)
                writer.u64(hardState.commit)
            }
            writer.u32(UInt32(entries.count))
            for entry in entries { writer.entry(entry) }
        case .snapshot(let snapshot):
            writer.byte(Self.snapshotKind)
            writer.u64(snapshot.index)
            writer.u64(snapshot.term)
            writer.membership(snapshot.membership)
            writer.u64(UInt64(snapshot.data.count))
            writer.bytes.append(contentsOf: snapshot.data)
        }
        return writer.bytes
    }

    /// Decodes a payload whose checksum held; a payload that still does not parse is
    /// damage the checksum missed or a writer's bug, and is refused (nil).
    static func decode(_ payload: ArraySlice<UInt8>) -> RaftRecord? {
        var reader = ByteReader(payload)
        guard let kind = reader.byte() else { return nil }
        let record: RaftRecord
        switch kind {
        case batchKind:
            guard let flags = reader.byte(), flags <= 1 else { return nil }
            var hardState: HardState?
            if flags == 1 {
                guard let term = reader.u64(), let hasVote = reader.byte(), hasVote <= 1, let vote = reader.u64(),
                    let commit = reader.u64()
                else { return nil }
                hardState = HardState(term: term, vote: hasVote == 1 ? vote : nil, commit: commit)
            }
            guard let count = reader.u32(), Int(count) <= reader.remaining / 17 else { return nil }
            var entries: [LogEntry] = []
            entries.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let entry = reader.entry() else { return nil }
                if let last = entries.last, entry.index != last.index + 1 { return nil }
                entries.append(entry)
            }
            record = .batch(hardState, entries: entries)
        case snapshotKind:
            guard let index = reader.u64(), let term = reader.u64(), let membership = reader.membership(),
                let length = reader.u64(), length == UInt64(reader.remaining), let data = reader.take(Int(length))
            else { return nil }
            record = .snapshot(Snapshot(index: index, term: term, membership: membership, data: data))
        default:
            return nil
        }
        return reader.remaining == 0 ? record : nil
    }
}

struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func byte(_ value: UInt8) { bytes.append(value) }

    mutating func u32(_ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func u64(_ value: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func entry(_ entry: LogEntry) {
        u64(entry.term)
        u64(entry.index)
        switch entry.kind {
        case .noop:
            byte(0)
        case .command(let command):
            byte(1)
            u32(UInt32(command.count))
            bytes.append(contentsOf: command)
        case .membership(let membership):
            byte(2)
            self.membership(membership)
        }
    }

    mutating func membership(_ membership: Membership) {
        for ids in [membership.voters, membership.learners] {
            u32(UInt32(ids.count))
            for id in ids { u64(id) }
        }
    }
}

struct ByteReader {
    private let bytes: ArraySlice<UInt8>
    private var position: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    var remaining: Int { bytes.endIndex - position }

    mutating func take(_ count: Int) -> [UInt8]? {
        guard count >= 0, count <= remaining else { return nil }
        defer { position += count }
        return Array(bytes[position..<position + count])
    }

    mutating func byte() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        defer { position += 4 }
        return bytes.withUnsafeBytes {
            UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: position - bytes.startIndex, as: UInt32.self))
        }
    }

    mutating func u64() -> UInt64? {
        guard remaining >= 8 else { return nil }
        defer { position += 8 }
        return bytes.withUnsafeBytes {
            UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: position - bytes.startIndex, as: UInt64.self))
        }
    }

    mutating func entry() -> LogEntry? {
        guard let term = u64(), let index = u64(), let kind = byte() else { return nil }
        switch kind {
        case 0:
            return LogEntry(term: term, index: index, kind: .noop)
        case 1:
            guard let length = u32(), let command = take(Int(length)) else { return nil }
            return LogEntry(term: term, index: index, kind: .command(command))
        case 2:
            guard let membership = membership() else { return nil }
            return LogEntry(term: term, index: index, kind: .membership(membership))
        default:
            return nil
        }
    }

    mutating func membership() -> Membership? {
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
