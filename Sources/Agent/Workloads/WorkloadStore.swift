import Foundation
import MeshAPI
import MeshIdentity

/// The desired state, durable: one JSON file per object in `<state>/workloads`, each
/// replaced atomically and durably (`PEMFile.write`), so that a crash leaves either the
/// old or the new version, never half of one. A few hundred small objects per node need no database; the files can be read
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
        try PEMFile.write(path(for: workload.key), bytes: Array(data), mode: 0o600)
    }

    func remove(_ key: String) throws {
        let path = path(for: key)
        guard unlink(path) == 0 || errno == ENOENT else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    private func path(for key: String) -> String {
        // Kind/namespace/name: all three are DNS labels or a kind name, so '.' is free.
        directory + "/" + key.replacingOccurrences(of: "/", with: ".") + ".json"
    }
}
