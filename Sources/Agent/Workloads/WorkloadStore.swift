import Foundation
import MeshAPI

/// The desired state, durable: one JSON file per object in `<state>/workloads`, each
/// written to a temporary file, flushed, renamed over the old one and the directory
/// flushed, so that a crash leaves either the old or the new version, never half of
/// one. A few hundred small objects per node need no database; the files can be read
/// and backed up with ordinary tools.
struct WorkloadStore {
    let directory: String

    init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Every stored object, by key. A file that cannot be read is reported and skipped.
    func load() -> (workloads: [String: Workload], errors: [String]) {
        var workloads: [String: Workload] = [:]
        var errors: [String] = []
        let files = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for file in files.sorted() where file.hasSuffix(".json") {
            let path = directory + "/" + file
            do {
                let workload = try MeshJSON.decoder().decode(
                    Workload.self,
                    from: Data(contentsOf: URL(fileURLWithPath: path))
                )
                workloads[workload.key] = workload
            } catch {
                errors.append("\(path): \(error)")
            }
        }
        return (workloads, errors)
    }

    func save(_ workload: Workload) throws {
        let data = try MeshJSON.encoder(pretty: true).encode(workload)
        try Self.replace(path: path(for: workload.key), with: Array(data))
    }

    func remove(_ key: String) throws {
        let path = path(for: key)
        guard unlink(path) == 0 || errno == ENOENT else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        Self.syncDirectory(directory)
    }

    private func path(for key: String) -> String {
        // Kind/namespace/name: all three are DNS labels or a kind name, so '.' is free.
        directory + "/" + key.replacingOccurrences(of: "/", with: ".") + ".json"
    }

    /// Writes `bytes` to `path` atomically and durably.
    static func replace(path: String, with bytes: [UInt8], mode: mode_t = 0o600) throws {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard count > 0 else {
                let failure = errno
                close(fd)
                throw POSIXError(POSIXErrorCode(rawValue: failure) ?? .EIO)
            }
            written += count
        }
        guard fsync(fd) == 0, close(fd) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        guard rename(temporary, path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        syncDirectory((path as NSString).deletingLastPathComponent)
    }

    static func syncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }
}
