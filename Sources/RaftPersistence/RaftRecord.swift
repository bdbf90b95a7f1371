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
            writer.snapshot(snapshot)
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
            guard let count = reader.u32(), let entries = reader.entries(count: count) else { return nil }
            record = .batch(hardState, entries: entries)
        case snapshotKind:
            guard let snapshot = reader.snapshot() else { return nil }
            record = .snapshot(snapshot)
        default:
            return nil
        }
        return reader.remaining == 0 ? record : nil
    }
}
