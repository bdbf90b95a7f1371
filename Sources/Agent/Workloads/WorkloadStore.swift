import Foundation
import MeshAPI
import MeshIdentity

/// The desired state, durable: every object in one JSON file, `<state>/workloads/
/// desired.json`, replaced atomically and durably (`PEMFile.write`: a temporary file,
/// fsync, rename, fsync of the directory) once per apply or delete. So an apply of
/// several objects is one step: a crash leaves the state before it or after it, never
/// part of it. A few hundred small objects per node need no database; the file can be
/// read (`jq`) and backed up with ordinary tools.
///
/// At open, temporary files a crash left behind are removed, and the one-file-per-object
/// layout of earlier versions is read once and folded into `desired.json`.
struct WorkloadStore {
    let directory: String
    private var file: String { directory + "/desired.json" }

    init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.contains(".tmp-") { unlink(directory + "/" + name) }
    }

    /// Every stored object, by key. An unreadable state is reported, never guessed at.
    func load() -> (workloads: [String: Workload], errors: [String]) {
        if FileManager.default.fileExists(atPath: file) {
            do {
                let list = try MeshJSON.decoder().decode(
                    [Workload].self,
                    from: Data(contentsOf: URL(fileURLWithPath: file))
                )
                return (Dictionary(list.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last }), [])
            } catch {
                return ([:], ["\(file): \(error)"])
            }
        }
        return loadLegacy()
    }

    /// Replaces the stored state with `workloads`, in one atomic step; then removes
    /// files of the earlier layout, which `desired.json` now holds.
    func commit(_ workloads: [String: Workload]) throws {
        let list = workloads.values.sorted { $0.key < $1.key }
        let data = try MeshJSON.encoder(pretty: true).encode(list)
        try PEMFile.write(file, bytes: Array(data), mode: 0o600)
        for name in legacyFiles() { unlink(directory + "/" + name) }
    }

    // MARK: one file per object (before desired.json)

    private func legacyFiles() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".json") && $0 != "desired.json" }.sorted()
    }

    private func loadLegacy() -> (workloads: [String: Workload], errors: [String]) {
        var workloads: [String: Workload] = [:]
        var errors: [String] = []
        for name in legacyFiles() {
            let path = directory + "/" + name
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
}
