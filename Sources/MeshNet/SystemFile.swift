#if canImport(Glibc)
    import Glibc
#endif

/// Whole-file reads, directory creation and path parents with plain POSIX calls, so
/// that the sidecar's start-up and reload paths need no Foundation (whose string and
/// file machinery a sidecar would otherwise map for a handful of reads).
public enum SystemFile {
    /// A failed file operation: what was attempted on which path, and why.
    public struct Failure: Error, Equatable, CustomStringConvertible {
        public let path: String
        public let reason: String
        public var description: String { "\(path): \(reason)" }

        init(_ path: String, _ action: String, errno code: Int32) {
            self.init(path, "cannot \(action): \(String(cString: strerror(code)))")
        }

        init(_ path: String, _ reason: String) {
            self.path = path
            self.reason = reason
        }
    }

    /// The UTF-8 text of the file at `path`; a file larger than `limit` bytes, or not
    /// UTF-8, is an error.
    public static func read(_ path: String, limit: Int) throws(Failure) -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(path, "read", errno: errno) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure(path, "read", errno: errno)
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<n])
            guard bytes.count <= limit else { throw Failure(path, "larger than \(limit) bytes") }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw Failure(path, "not UTF-8 text") }
        return text
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and EINTR; the errno of a
    /// failed write, or nil.
    public static func writeAll(_ bytes: [UInt8], to fd: Int32) -> Int32? {
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            written += n
        }
        return nil
    }

    /// Creates `path` and every missing parent (mode 0755, like `mkdir -p`); an
    /// existing directory is fine, an existing file is an error.
    public static func createDirectories(_ path: String) throws(Failure) {
        var status = stat()
        if stat(path, &status) == 0 {
            guard status.st_mode & S_IFMT == S_IFDIR else { throw Failure(path, "exists and is not a directory") }
            return
        }
        let parent = parent(of: path)
        if parent != path { try createDirectories(parent) }
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else { throw Failure(path, "create", errno: errno) }
    }

    /// The directory holding `path`: `/a/b` → `/a`, `/a` → `/`, `b` → `.`, `a/b/` → `a`.
    public static func parent(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "." }
        var parent = trimmed[..<slash]
        while parent.count > 1, parent.hasSuffix("/") { parent = parent.dropLast() }
        return parent.isEmpty ? "/" : String(parent)
    }
}
