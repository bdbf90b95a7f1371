import MeshAPI
import MeshNet

#if canImport(Glibc)
    import Glibc
#endif

/// The admin API's unix socket path: its directory is created, and a socket file left
/// by a sidecar that died is removed, but one that another live process still serves
/// is not taken over (two sidecars must not share a socket).
package enum AdminSocket {
    package struct Unusable: Error, CustomStringConvertible {
        let path: String
        let reason: String
        package var description: String { "\(path): \(reason)" }

        package init(path: String, reason: String) {
            self.path = path
            self.reason = reason
        }
    }

    package static func prepare(_ path: String) throws {
        try SystemFile.createDirectories(SystemFile.parent(of: path))
        var status = stat()
        guard lstat(path, &status) == 0 else { return }
        guard status.st_mode & S_IFMT == S_IFSOCK else {
            throw Unusable(path: path, reason: "exists and is not a socket; not replacing it")
        }
        if AdminClient(endpoint: .unix(path: path), timeout: 1).isReachable() {
            throw Unusable(path: path, reason: "another process serves the admin API on this socket")
        }
        unlink(path)
    }
}
