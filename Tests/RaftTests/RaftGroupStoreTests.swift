import Foundation
import MeshTestSupport
import Raft
import RaftSimulation
import Testing

@testable import RaftPersistence

/// The write-ahead log and snapshot of a Raft group on a real disk: what was synced
/// comes back, a torn tail is cut at every byte offset and with a flipped bit,
/// damage in the middle is refused with its offset, snapshots replace the log
/// atomically, and a writer killed with SIGKILL loses no acknowledged entry.
@Suite struct RaftGroupStoreTests {
    static func entry(_ index: UInt64, term: UInt64 = 1) -> LogEntry {
        LogEntry(term: term, index: index, kind: .command(LogCrashWorkload.command(at: index)))
    }

    @Test func crc32cMatchesTheStandardCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
    }

    @Test func whatWasSyncedComesBackAndLaterEntriesReplaceEarlierOnes() throws {
        let directory = TemporaryDirectory()
        do {
            let store = try RaftGroupStore(directory: directory.path + "/group")
            #expect(store.recovered == RaftStorage())
            store.append(HardState(term: 1, vote: 2, commit: 0), entries: (1...5).map { Self.entry($0) })
            store.append(
                nil,
                entries: [
                    LogEntry(term: 2, index: 4, kind: .noop),
                    LogEntry(term: 2, index: 5, kind: .membership(Membership(voters: [1, 2, 3], learners: [4]))),
                ]
            )
            store.append(HardState(term: 2, vote: nil, commit: 3), entries: [])
            try store.sync()
        }
        let store = try RaftGroupStore(directory: directory.path + "/group")
        #expect(store.repairedBytes == 0)
        #expect(store.recovered.hardState == HardState(term: 2, vote: nil, commit: 3))
        #expect(
            store.recovered.entries
                == (1...3).map { Self.entry($0) } + [
                    LogEntry(term: 2, index: 4, kind: .noop),
                    LogEntry(term: 2, index: 5, kind: .membership(Membership(voters: [1, 2, 3], learners: [4]))),
                ]
        )
    }

    /// A log of acknowledged batches, then one more write the crash interrupted.
    struct TornLog {
        let directory = TemporaryDirectory()
        var path: String { directory.path + "/wal" }
        let acknowledged: RaftStorage
        /// Where the interrupted write's record starts and ends.
        let tail: Range<Int>

        init() throws {
            do {
                let store = try RaftGroupStore(directory: directory.path)
                for batch in 0..<4 as Range<UInt64> {
                    store.append(
                        HardState(term: 1, vote: 1, commit: batch * 3),
                        entries: (batch * 3 + 1...batch * 3 + 3).map { RaftGroupStoreTests.entry($0) }
                    )
                    try store.sync()
                }
            }
            let before = try Data(contentsOf: URL(fileURLWithPath: directory.path + "/wal")).count
            acknowledged = try RaftGroupStore(directory: directory.path).recovered
            do {
                let store = try RaftGroupStore(directory: directory.path)
                store.append(HardState(term: 2, vote: 1, commit: 12), entries: [RaftGroupStoreTests.entry(13, term: 2)])
                try store.sync()
            }
            let after = try Data(contentsOf: URL(fileURLWithPath: directory.path + "/wal")).count
            tail = before..<after
        }

        func rewrite(_ change: (inout [UInt8]) -> Void) throws {
            var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            change(&bytes)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
        }
    }

    @Test func aLastRecordCutAtEveryByteOffsetRecoversEveryAcknowledgedEntry() throws {
        let log = try TornLog()
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: log.path)))
        var wrong: [String] = []
        for cut in log.tail.lowerBound..<log.tail.upperBound {
            try Data(original[..<cut]).write(to: URL(fileURLWithPath: log.path))
            let store = try RaftGroupStore(directory: log.directory.path)
            if store.recovered != log.acknowledged || store.repairedBytes != cut - log.tail.lowerBound {
                wrong.append(
                    "cut at \(cut): \(store.recovered.entries.count) entries, \(store.repairedBytes) bytes cut"
                )
            }
            let size = try FileManager.default.attributesOfItem(atPath: log.path)[.size] as? Int
            if size != log.tail.lowerBound { wrong.append("cut at \(cut): the file was left at \(size ?? -1) bytes") }
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(5))")
        #expect(log.tail.count > 100)
    }

    @Test func aFlippedBitInTheLastRecordOrAZeroedTailIsCutOff() throws {
        let log = try TornLog()
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: log.path)))
        var wrong: [String] = []
        for position in log.tail {
            var damaged = original
            damaged[position] ^= 1 << UInt8(position % 8)
            try Data(damaged).write(to: URL(fileURLWithPath: log.path))
            let store = try RaftGroupStore(directory: log.directory.path)
            if store.recovered != log.acknowledged { wrong.append("bit flipped at byte \(position)") }
        }
        // A file system that extended the file but never wrote the data: zeros.
        try Data(original[..<log.tail.lowerBound] + [UInt8](repeating: 0, count: 4096))
            .write(to: URL(fileURLWithPath: log.path))
        let zeroed = try RaftGroupStore(directory: log.directory.path)
        #expect(zeroed.recovered == log.acknowledged && zeroed.repairedBytes == 4096)
        #expect(wrong.isEmpty, "\(wrong.prefix(5))")
    }

    @Test func damageInTheMiddleIsRefusedWithItsOffset() throws {
        let log = try TornLog()
        // The second record (after the magic, the salt and the first record).
        let file = [UInt8](try Data(contentsOf: URL(fileURLWithPath: log.path)))
        let salt = Array(file[8..<RaftGroupStore.headerSize])
        let first = try #require(RecordFrame.payload(in: file, at: RaftGroupStore.headerSize, salt: salt))
        let second = first.upperBound
        try log.rewrite { $0[second + RecordFrame.headerSize + 20] ^= 0x10 }
        let error = #expect(throws: RaftStoreError.self) { try RaftGroupStore(directory: log.directory.path) }
        #expect(error?.code == .corruptRecord)
        #expect(error?.offset == second, "\(String(describing: error))")
        #expect(error?.description.contains("refusing to guess") == true)
        // Nothing was cut: the operator still has the whole file to look at.
        let size = try FileManager.default.attributesOfItem(atPath: log.path)[.size] as? Int
        #expect(size == log.tail.upperBound)
        // The payload mended, its length damaged instead: the header's own checksum
        // finds it, and the good records after it make it damage in the middle again.
        try log.rewrite {
            $0[second + RecordFrame.headerSize + 20] ^= 0x10
            $0[second + 1] ^= 0x01
        }
        let header = #expect(throws: RaftStoreError.self) { try RaftGroupStore(directory: log.directory.path) }
        #expect(header?.code == .corruptRecord && header?.offset == second)
    }

    @Test func aForeignOrDamagedFileIsRefused() throws {
        let directory = TemporaryDirectory()
        try Data("not a log".utf8).write(to: URL(fileURLWithPath: directory.path + "/wal"))
        let foreign = #expect(throws: RaftStoreError.self) { try RaftGroupStore(directory: directory.path) }
        #expect(foreign?.code == .badMagic)

        let other = TemporaryDirectory()
        do {
            let store = try RaftGroupStore(directory: other.path)
            store.append(HardState(term: 1, vote: 1, commit: 1), entries: [Self.entry(1)])
            try store.save(
                Snapshot(index: 1, term: 1, membership: Membership(voters: [1]), data: [1, 2, 3]),
                keeping: []
            )
        }
        var snapshot = [UInt8](try Data(contentsOf: URL(fileURLWithPath: other.path + "/snapshot")))
        snapshot[snapshot.count - 2] ^= 0x04
        try Data(snapshot).write(to: URL(fileURLWithPath: other.path + "/snapshot"))
        let damaged = #expect(throws: RaftStoreError.self) { try RaftGroupStore(directory: other.path) }
        #expect(damaged?.code == .corruptSnapshot)
    }

    @Test func aSnapshotReplacesTheLogAndACrashBetweenTheTwoFilesFollowsRaftsRule() throws {
        let directory = TemporaryDirectory()
        let membership = Membership(voters: [1, 2, 3])
        let wal = URL(fileURLWithPath: directory.path + "/wal")
        let oldLog: Data
        do {
            let store = try RaftGroupStore(directory: directory.path)
            store.append(HardState(term: 1, vote: 1, commit: 8), entries: (1...10).map { Self.entry($0) })
            try store.sync()
            oldLog = try Data(contentsOf: wal)
            // A snapshot taken here at 8: entries 9 and 10 stay, the log shrinks.
            try store.save(
                Snapshot(index: 8, term: 1, membership: membership, data: [8]),
                keeping: [9, 10].map { Self.entry($0) }
            )
            #expect(store.logBytes < oldLog.count)
            #expect(FileManager.default.fileExists(atPath: directory.path + "/wal.tmp") == false)
        }
        let reopened = try RaftGroupStore(directory: directory.path)
        #expect(reopened.recovered.snapshot?.index == 8 && reopened.recovered.entries.map(\.index) == [9, 10])
        #expect(reopened.recovered.hardState == HardState(term: 1, vote: 1, commit: 8))

        // The crash came after the snapshot's rename, before the log's: the old log
        // holds entry 8 of term 1, as the snapshot says, so 9 and 10 are kept.
        try oldLog.write(to: wal)
        let local = try RaftGroupStore(directory: directory.path).recovered
        #expect(local.snapshot?.index == 8 && local.entries.map(\.index) == [9, 10])

        // A snapshot from a leader of term 3 at 9: the old log's entry 9 has term 1,
        // so nothing of the old log leads up to it, and none of it is kept.
        do {
            let store = try RaftGroupStore(directory: directory.path)
            try store.save(Snapshot(index: 9, term: 3, membership: membership, data: [9]), keeping: [])
        }
        try oldLog.write(to: wal)
        let installed = try RaftGroupStore(directory: directory.path).recovered
        #expect(installed.snapshot?.index == 9 && installed.entries.isEmpty)
        #expect(installed.hardState.term == 1)

        // Leftovers of an interrupted atomic write are removed at open.
        try Data("half".utf8).write(to: URL(fileURLWithPath: directory.path + "/snapshot.tmp"))
        _ = try RaftGroupStore(directory: directory.path)
        #expect(FileManager.default.fileExists(atPath: directory.path + "/snapshot.tmp") == false)
    }

    @Test func aLogWithAGapOrNoStartIsRefused() {
        let gap = #expect(throws: RaftStoreError.self) {
            try RaftGroupStore.assemble(
                snapshot: nil,
                batches: [(nil, [Self.entry(1), Self.entry(2)]), (nil, [Self.entry(4)])],
                path: "wal"
            )
        }
        #expect(gap?.code == .discontiguous)
        let noStart = #expect(throws: RaftStoreError.self) {
            try RaftGroupStore.assemble(snapshot: nil, batches: [(nil, [Self.entry(3)])], path: "wal")
        }
        #expect(noStart?.code == .discontiguous)
    }

    /// The writer (`beemesh-raft-sim --log-writer`) syncs each batch before it prints
    /// it acknowledged, and is killed with SIGKILL after a random number of batches,
    /// five times over one directory; each restart recovers and goes on.
    @Test func aWriterKilledMidWriteRestartsWithEveryAcknowledgedEntry() async throws {
        let directory = TemporaryDirectory()
        let writer = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("beemesh-raft-sim")
        var random = SplitMix64(seed: 20)
        var acknowledged: UInt64 = 0
        for round in 0..<5 {
            let killAfter = 20 + Int(random.next() % 200)
            let seed = random.next()
            let last = try await blocking { () throws -> UInt64 in
                let process = Process()
                process.executableURL = writer
                process.arguments = ["--log-writer", directory.path, "--first-seed", "\(seed)"]
                let output = Pipe()
                process.standardOutput = output
                try process.run()
                var text = ""
                var lines = 0
                while lines < killAfter {
                    let chunk = output.fileHandleForReading.availableData
                    if chunk.isEmpty { break }
                    text += String(decoding: chunk, as: UTF8.self)
                    lines = text.filter { $0 == "\n" }.count
                }
                kill(process.processIdentifier, SIGKILL)
                text += String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                process.waitUntilExit()
                let last = text.split(separator: "\n").last { $0.hasPrefix("acknowledged ") }
                return last.flatMap { UInt64($0.dropFirst("acknowledged ".count)) } ?? 0
            }
            #expect(last > acknowledged, "round \(round): the writer acknowledged nothing new")
            acknowledged = max(acknowledged, last)
            let recovered = try RaftGroupStore(directory: directory.path).recovered
            let problem = LogCrashWorkload.check(recovered, acknowledged: acknowledged)
            #expect(problem == nil, "round \(round), seed \(seed): \(problem ?? "")")
        }
        #expect(acknowledged > 700)
        #expect(
            FileManager.default.fileExists(atPath: directory.path + "/snapshot"),
            "the writer snapshotted and rewrote its log at least once"
        )
    }
}
