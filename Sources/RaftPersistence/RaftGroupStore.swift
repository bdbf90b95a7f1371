import Raft

#if canImport(Glibc)
    import Glibc
#endif

/// One Raft group's durable state: a directory with a write-ahead log and the latest
/// snapshot. A shell opens it, hands `recovered` to `Raft`, and carries out `persist`
/// directives with `append` then `sync` before it sends what depended on them.
///
/// | file | what | written |
/// | --- | --- | --- |
/// | `wal` | magic `BMRAFTW2`, an 8-byte random salt, then one batch record per `sync` (every `append` since the last, merged) | appended, then fdatasync |
/// | `snapshot` | magic `BMRAFTS2`, a salt, then one snapshot record | atomically: `snapshot.tmp`, fsync, rename, fsync of the directory |
///
/// Records are framed by `RecordFrame` (length, CRC-32C of payload and of header, both
/// from the file's salt). One record per sync means the write a crash can tear is
/// always the last record, whatever order the page cache wrote its pages in.
/// Recovery reads the snapshot, then every good record of the log:
/// - a bad record with nothing good after it is a torn tail (a write the crash cut
///   short, so never acknowledged): the file is cut back to the last good record, and
///   `repairedBytes` says how much went;
/// - a bad record followed by a good one is damage in the middle: `RaftStoreError`
///   with its offset, and the group does not start. Guessing there could lose
///   acknowledged entries or a vote.
///
/// A snapshot replaces the log by rewriting it (`wal.tmp`, renamed over `wal`) with
/// the hard state and the entries after the snapshot. A crash between the two renames
/// leaves the new snapshot with the old log; recovery then applies Raft's own
/// InstallSnapshot rule: entries after the snapshot are kept only when the log holds
/// the snapshot's last entry with its term.
public final class RaftGroupStore {
    public let directory: String
    /// What the disk held at open, for `Raft.init`.
    public let recovered: RaftStorage
    /// Bytes of a torn tail cut off at open (0: the log ended cleanly).
    public let repairedBytes: Int
    /// The hard state last appended.
    public private(set) var hardState: HardState
    /// The log's size on disk.
    public private(set) var logBytes: Int
    private var descriptor: Int32
    private var salt: [UInt8]
    /// What `append` gathered since the last sync: the latest hard state, and the
    /// entries (which replace any from the first one's index on), merged.
    private var pendingState: HardState?
    private var pendingEntries: [LogEntry] = []

    static let logMagic = Array("BMRAFTW2".utf8)
    static let snapshotMagic = Array("BMRAFTS2".utf8)
    /// Magic and salt.
    static let headerSize = 16
    var logPath: String { directory + "/wal" }
    var snapshotPath: String { directory + "/snapshot" }

    /// Opens (creating it when missing) and recovers the group in `directory`.
    public init(directory: String) throws(RaftStoreError) {
        self.directory = directory
        try Self.makeDirectory(directory)
        for leftover in ["/wal.tmp", "/snapshot.tmp"] { unlink(directory + leftover) }
        let logPath = directory + "/wal"
        let snapshotPath = directory + "/snapshot"
        let snapshot = try Self.readSnapshot(snapshotPath)
        if access(logPath, F_OK) != 0 {
            guard snapshot == nil else {
                throw RaftStoreError(.missingLog, path: logPath, reason: "a snapshot without its log")
            }
            try Self.writeAtomically(Self.logMagic + Self.newSalt(), to: logPath, directory: directory)
        }
        var file = try Self.readFile(logPath)
        guard file.count >= Self.headerSize, Array(file.prefix(8)) == Self.logMagic else {
            throw RaftStoreError(.badMagic, path: logPath, reason: "not a BeeMesh Raft log (no BMRAFTW2 header)")
        }
        salt = Array(file[8..<Self.headerSize])
        let scan = RecordFrame.scan(file, from: Self.headerSize, salt: salt)
        if let resumesAt = scan.resumesAt {
            throw RaftStoreError(
                .corruptRecord,
                path: logPath,
                offset: scan.end,
                reason: "a damaged record at byte \(scan.end) is followed by a good one at byte \(resumesAt): "
                    + "damage in the middle of the log, not a torn write; refusing to guess"
            )
        }
        var batches: [(HardState?, [LogEntry])] = []
        for payload in scan.payloads {
            guard case .batch(let state, let entries)? = RaftRecord.decode(file[payload]) else {
                throw RaftStoreError(
                    .corruptRecord,
                    path: logPath,
                    offset: payload.lowerBound - RecordFrame.headerSize,
                    reason: "a record whose checksum holds does not decode"
                )
            }
            batches.append((state, entries))
        }
        repairedBytes = file.count - scan.end
        descriptor = open(logPath, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard descriptor >= 0 else { throw RaftStoreError.io("open", logPath) }
        if repairedBytes > 0 {
            file.removeSubrange(scan.end...)
            guard ftruncate(descriptor, off_t(scan.end)) == 0, fdatasync(descriptor) == 0 else {
                close(descriptor)
                throw RaftStoreError.io("truncate the torn tail of", logPath)
            }
        }
        logBytes = file.count
        do throws(RaftStoreError) {
            recovered = try Self.assemble(snapshot: snapshot, batches: batches, path: logPath)
        } catch {
            close(descriptor)
            throw error
        }
        hardState = recovered.hardState
    }

    deinit { close(descriptor) }

    /// Queues one `persist` directive's hard state and entries (which replace any from
    /// the first one's index on). Durable only after `sync`.
    public func append(_ hardState: HardState?, entries: [LogEntry]) {
        guard hardState != nil || !entries.isEmpty else { return }
        if let hardState {
            self.hardState = hardState
            pendingState = hardState
        }
        guard let first = entries.first?.index else { return }
        if let start = pendingEntries.first?.index {
            precondition(first <= start + UInt64(pendingEntries.count), "entries \(first)… after a gap in the log")
        }
        if let start = pendingEntries.first?.index, first > start {
            pendingEntries.removeLast(max(0, pendingEntries.count - Int(first - start)))
        } else {
            pendingEntries = []
        }
        pendingEntries += entries
    }

    /// How many entries wait for `sync`.
    public var pendingEntryCount: Int { pendingEntries.count }

    /// Whether appended records wait for `sync`.
    public var hasPendingWrites: Bool { pendingState != nil || !pendingEntries.isEmpty }

    /// Writes what was appended, as one record, and waits until it is on the disk
    /// (fdatasync).
    public func sync() throws(RaftStoreError) {
        guard let write = takePending() else { return }
        try write.perform()
    }

    /// What was appended, as one record to write and sync, taken out of the store so
    /// that `append` may go on while another thread does it (`PendingWrite.perform`).
    /// Only one may be under way at a time, and neither `sync` nor `save` meanwhile.
    public func takePending() -> PendingWrite? {
        guard hasPendingWrites else { return nil }
        var record: [UInt8] = []
        RecordFrame.append(
            RaftRecord.batch(pendingState, entries: pendingEntries).encoded(),
            salt: salt,
            to: &record
        )
        logBytes += record.count
        pendingState = nil
        pendingEntries.removeAll(keepingCapacity: true)
        return PendingWrite(record: record, descriptor: descriptor, path: logPath)
    }

    /// One record on its way to the disk.
    public struct PendingWrite: Sendable {
        let record: [UInt8]
        let descriptor: Int32
        let path: String

        /// Writes the record and waits for fdatasync (on any thread).
        public func perform() throws(RaftStoreError) {
            try RaftGroupStore.writeAll(record, to: descriptor, path: path)
            guard fdatasync(descriptor) == 0 else { throw RaftStoreError.io("fdatasync", path) }
        }
    }

    /// Keeps `snapshot` (atomically), then rewrites the log to hold only the hard
    /// state and `entries`, which must be those after the snapshot: all of them after
    /// a snapshot taken here, none after one installed from the leader.
    public func save(_ snapshot: Snapshot, keeping entries: [LogEntry]) throws(RaftStoreError) {
        precondition(entries.first.map { $0.index == snapshot.index + 1 } ?? true, "entries after the snapshot only")
        try sync()
        let snapshotSalt = Self.newSalt()
        var file = Self.snapshotMagic + snapshotSalt
        RecordFrame.append(RaftRecord.snapshot(snapshot).encoded(), salt: snapshotSalt, to: &file)
        try Self.writeAtomically(file, to: snapshotPath, directory: directory)
        let logSalt = Self.newSalt()
        var log = Self.logMagic + logSalt
        RecordFrame.append(RaftRecord.batch(hardState, entries: entries).encoded(), salt: logSalt, to: &log)
        try Self.writeAtomically(log, to: logPath, directory: directory)
        salt = logSalt
        let reopened = open(logPath, O_WRONLY | O_APPEND | O_CLOEXEC)
        guard reopened >= 0 else { throw RaftStoreError.io("open", logPath) }
        close(descriptor)
        descriptor = reopened
        logBytes = log.count
    }

    /// Removes a group's directory and everything in it (the group was deleted).
    public static func remove(directory: String) throws(RaftStoreError) {
        for file in ["wal", "wal.tmp", "snapshot", "snapshot.tmp"] {
            let path = directory + "/" + file
            guard unlink(path) == 0 || errno == ENOENT else { throw RaftStoreError.io("remove", path) }
        }
        guard rmdir(directory) == 0 || errno == ENOENT else { throw RaftStoreError.io("remove", directory) }
    }

    // MARK: recovery

    /// The log's batches on top of the snapshot, as `Raft` takes them.
    static func assemble(
        snapshot: Snapshot?,
        batches: [(HardState?, [LogEntry])],
        path: String
    ) throws(RaftStoreError) -> RaftStorage {
        var hardState = HardState()
        var entries: [LogEntry] = []
        for (state, batch) in batches {
            if let state { hardState = state }
            guard let first = batch.first?.index else { continue }
            if let start = entries.first?.index {
                let last = start + UInt64(entries.count) - 1
                guard first <= last + 1 else {
                    throw RaftStoreError(
                        .discontiguous,
                        path: path,
                        reason: "entries from \(first) follow entries up to \(last): a gap in the log"
                    )
                }
                entries.removeLast(Int(last + 1 - max(first, start)))
            }
            entries += batch
        }
        guard let snapshot else {
            if let first = entries.first, first.index != 1 {
                throw RaftStoreError(
                    .discontiguous,
                    path: path,
                    reason: "the log starts at entry \(first.index) and there is no snapshot"
                )
            }
            return RaftStorage(hardState: hardState, entries: entries)
        }
        if let first = entries.first?.index {
            if first == snapshot.index + 1 {
                // The log rewritten after this snapshot.
            } else if first <= snapshot.index, let at = entries.first(where: { $0.index == snapshot.index }),
                at.term == snapshot.term
            {
                entries.removeFirst(Int(snapshot.index + 1 - first))
            } else if first <= snapshot.index {
                // A snapshot installed from the leader, and the crash came before the
                // log was rewritten: the old log does not lead up to it.
                entries = []
            } else {
                throw RaftStoreError(
                    .discontiguous,
                    path: path,
                    reason: "the log starts at entry \(first), after the snapshot's \(snapshot.index)"
                )
            }
        }
        return RaftStorage(hardState: hardState, snapshot: snapshot, entries: entries)
    }

    private static func readSnapshot(_ path: String) throws(RaftStoreError) -> Snapshot? {
        guard access(path, F_OK) == 0 else { return nil }
        let file = try readFile(path)
        guard file.count >= headerSize, Array(file.prefix(8)) == snapshotMagic else {
            throw RaftStoreError(.badMagic, path: path, reason: "not a BeeMesh Raft snapshot (no BMRAFTS2 header)")
        }
        let scan = RecordFrame.scan(file, from: headerSize, salt: Array(file[8..<headerSize]))
        guard scan.payloads.count == 1, scan.end == file.count,
            case .snapshot(let snapshot)? = RaftRecord.decode(file[scan.payloads[0]])
        else {
            throw RaftStoreError(
                .corruptSnapshot,
                path: path,
                offset: scan.end,
                reason: "the snapshot is damaged (it is written atomically, so this is not a torn write)"
            )
        }
        return snapshot
    }

    // MARK: files

    /// 8 bytes no workload can guess.
    static func newSalt() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return withUnsafeBytes(of: generator.next() as UInt64) { Array($0) }
    }

    private static func readFile(_ path: String) throws(RaftStoreError) -> [UInt8] {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw RaftStoreError.io("open", path) }
        defer { close(descriptor) }
        var file: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw RaftStoreError.io("read", path) }
            if count == 0 { return file }
            file += chunk[0..<count]
        }
    }

    private static func writeAll(_ bytes: [UInt8], to descriptor: Int32, path: String) throws(RaftStoreError) {
        var written = 0
        while written < bytes.count {
            let count = bytes.withUnsafeBytes {
                write(descriptor, $0.baseAddress! + written, $0.count - written)
            }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw RaftStoreError.io("write", path) }
            written += count
        }
    }

    /// `path.tmp`, written and fsynced, renamed over `path`, and the rename made
    /// durable by an fsync of the directory.
    static func writeAtomically(_ bytes: [UInt8], to path: String, directory: String) throws(RaftStoreError) {
        let temporary = path + ".tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw RaftStoreError.io("create", temporary) }
        do throws(RaftStoreError) {
            try writeAll(bytes, to: descriptor, path: temporary)
            guard fsync(descriptor) == 0 else { throw RaftStoreError.io("fsync", temporary) }
        } catch {
            close(descriptor)
            throw error
        }
        close(descriptor)
        guard rename(temporary, path) == 0 else { throw RaftStoreError.io("rename to \(path)", temporary) }
        try syncDirectory(directory)
    }

    private static func syncDirectory(_ directory: String) throws(RaftStoreError) {
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw RaftStoreError.io("open", directory) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw RaftStoreError.io("fsync", directory) }
    }

    private static func makeDirectory(_ directory: String) throws(RaftStoreError) {
        var path = directory.hasPrefix("/") ? "" : "."
        for component in directory.split(separator: "/", omittingEmptySubsequences: true) {
            path += "/" + component
            guard mkdir(path, 0o700) == 0 || errno == EEXIST else { throw RaftStoreError.io("create", path) }
        }
    }
}

/// Why a group's files could not be opened or written, with where.
public struct RaftStoreError: Error, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable {
        case io
        case badMagic = "bad_magic"
        /// Damage in the middle of the log, or a record that does not decode.
        case corruptRecord = "corrupt_record"
        case corruptSnapshot = "corrupt_snapshot"
        /// Entries that do not follow one another, or a log that does not meet its snapshot.
        case discontiguous
        case missingLog = "missing_log"
    }

    public let code: Code
    public let path: String
    public let offset: Int?
    public let reason: String

    init(_ code: Code, path: String, offset: Int? = nil, reason: String) {
        self.code = code
        self.path = path
        self.offset = offset
        self.reason = reason
    }

    static func io(_ what: String, _ path: String) -> RaftStoreError {
        RaftStoreError(.io, path: path, reason: "\(what): \(String(cString: strerror(errno)))")
    }

    public var description: String {
        "\(path)\(offset.map { " at byte \($0)" } ?? ""): \(reason) (\(code.rawValue))"
    }
}
