import Raft
import RaftPersistence

/// The writer of the write-ahead log's crash test (`beemesh-raft-sim --log-writer`):
/// appends batches of entries whose content follows from their index, syncs each, and
/// only then reports it acknowledged; now and then it snapshots and rewrites the log.
/// The test kills it with SIGKILL at a random moment and checks that every entry it
/// acknowledged is on disk (or inside the snapshot) with the right content.
public enum LogCrashWorkload {
    /// The command of entry `index`: its length and bytes follow from it, so that a
    /// recovered entry can be checked without a copy of what was written.
    public static func command(at index: UInt64) -> [UInt8] {
        let length = Int(1 + (index &* 7919) % 3000)
        return (0..<length).map { UInt8(truncatingIfNeeded: index &* 31 &+ UInt64($0)) }
    }

    public static func term(at index: UInt64) -> UInt64 { 1 + index / 100 }

    /// The snapshot's data: the index it covers, as text.
    public static func snapshotData(_ index: UInt64) -> [UInt8] { Array("applied \(index)".utf8) }

    /// Why `storage` is not what a writer that acknowledged up to `acknowledged` leaves,
    /// or nil when it is.
    public static func check(_ storage: RaftStorage, acknowledged: UInt64) -> String? {
        var next = (storage.snapshot?.index ?? 0) + 1
        if let snapshot = storage.snapshot, snapshot.data != snapshotData(snapshot.index) {
            return "the snapshot at \(snapshot.index) holds other data"
        }
        for entry in storage.entries {
            guard entry.index == next else { return "entry \(entry.index) where \(next) was due" }
            guard entry.term == term(at: entry.index), entry.kind == .command(command(at: entry.index)) else {
                return "entry \(entry.index) holds other content"
            }
            next += 1
        }
        guard next - 1 >= acknowledged else {
            return "entries up to \(acknowledged) were acknowledged; the disk holds up to \(next - 1)"
        }
        guard storage.hardState.commit <= next - 1, storage.hardState.term >= term(at: next - 1) else {
            return "hard state \(storage.hardState) does not match the log's end at \(next - 1)"
        }
        return nil
    }

    /// Appends until `entries` more are acknowledged (forever when nil), calling
    /// `acknowledged` with the last synced index after each sync.
    public static func run(
        directory: String,
        entries: UInt64?,
        seed: UInt64,
        acknowledged: (UInt64) -> Void
    ) throws {
        let store = try RaftGroupStore(directory: directory)
        var random = SeededGenerator(seed: seed)
        var kept = store.recovered.entries
        var last = kept.last?.index ?? store.recovered.snapshot?.index ?? 0
        let stop = entries.map { last + $0 } ?? .max
        while last < stop {
            let count = 1 + random.next() % 16
            let batch = (last + 1...last + count).map {
                LogEntry(term: term(at: $0), index: $0, kind: .command(command(at: $0)))
            }
            last += count
            store.append(HardState(term: term(at: last), vote: 1, commit: last - count), entries: batch)
            try store.sync()
            kept += batch
            acknowledged(last)
            if kept.count > 700 {
                let index = last - 50
                let snapshot = Snapshot(
                    index: index,
                    term: term(at: index),
                    membership: Membership(voters: [1, 2, 3]),
                    data: snapshotData(index)
                )
                kept.removeAll { $0.index <= index }
                try store.save(snapshot, keeping: kept)
            }
        }
    }
}
