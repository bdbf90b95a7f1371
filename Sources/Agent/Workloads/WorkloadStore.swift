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

    /// The desired state cannot be read: the agent does not start, since reconciling
    /// an empty state would remove every pod of the node.
    struct Unreadable: Error, CustomStringConvertible {
        let file: String
        let reason: String
        var description: String {
            "\(file): \(reason); not starting, so that no pod is removed (repair the file, or move it aside to start empty)"
        }
    }

    /// Every stored object, by key, and the old-layout files that could not be read
    /// (skipped, and kept on disk). An unreadable `desired.json` is an error.
    func load() throws(Unreadable) -> (workloads: [String: KubernetesObject], errors: [String]) {
        guard FileManager.default.fileExists(atPath: file) else { return loadLegacy() }
        do {
            let list = try MeshJSON.decoder().decode(
                [KubernetesObject].self,
                from: Data(contentsOf: URL(fileURLWithPath: file))
            )
            return (Dictionary(list.map { ($0.key, $0) }, uniquingKeysWith: { _, last in last }), [])
        } catch {
            throw Unreadable(file: file, reason: "\(error)")
        }
    }

    /// Replaces the stored state with `workloads`, in one atomic step; then removes
    /// the files of the earlier layout that `desired.json` now holds (one that could
    /// not be read stays, for its owner to look at).
    func commit(_ workloads: [String: KubernetesObject]) throws {
        let list = workloads.values.sorted { $0.key < $1.key }
        let data = try MeshJSON.encoder(pretty: true).encode(list)
        try PEMFile.write(file, bytes: Array(data), mode: 0o600)
        for name in legacyFiles() where readLegacy(directory + "/" + name) != nil { unlink(directory + "/" + name) }
    }

    // MARK: one file per object (before desired.json)

    private func legacyFiles() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.filter { $0.hasSuffix(".json") && $0 != "desired.json" }.sorted()
    }

    private func loadLegacy() -> (workloads: [String: KubernetesObject], errors: [String]) {
        var workloads: [String: KubernetesObject] = [:]
        var errors: [String] = []
        for name in legacyFiles() {
            let path = directory + "/" + name
            if let workload = readLegacy(path) {
                workloads[workload.key] = workload
            } else {
                errors.append("\(path): not a stored object")
            }
        }
        return (workloads, errors)
    }

    private func readLegacy(_ path: String) -> KubernetesObject? {
        try? MeshJSON.decoder().decode(KubernetesObject.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
    }
}
