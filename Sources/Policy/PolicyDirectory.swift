#if canImport(Glibc)
    import Glibc
#endif

/// Reads the policy files of a directory: every `*.yaml`, `*.yml` and `*.json`,
/// following symlinks (Kubernetes ConfigMap volumes link each file through `..data`),
/// skipping hidden entries. A missing directory reads as empty.
///
/// Plain POSIX calls: a sidecar without a policy directory reads it every time the
/// watcher looks, and should not wake Foundation's error machinery to learn that.
public enum PolicyDirectory {
    /// Files larger than this are refused rather than read.
    public static let maximumFileSize = 4 * 1024 * 1024

    public static func read(_ directory: String) -> [String: Result<String, LocatedError>] {
        guard let handle = opendir(directory) else { return [:] }
        defer { closedir(handle) }
        var contents: [String: Result<String, LocatedError>] = [:]
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard !name.hasPrefix("."), isPolicyFile(name) else { continue }
            let path = directory.hasSuffix("/") ? directory + name : directory + "/" + name
            var status = stat()
            // stat follows symlinks: a link to a directory (or a dangling one) is skipped.
            guard stat(path, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { continue }
            contents[path] = readFile(path, size: Int(status.st_size))
        }
        return contents
    }

    static func isPolicyFile(_ name: String) -> Bool {
        name.hasSuffix(".yaml") || name.hasSuffix(".yml") || name.hasSuffix(".json")
    }

    private static func readFile(_ path: String, size: Int) -> Result<String, LocatedError> {
        func failure(_ reason: String) -> Result<String, LocatedError> {
            .failure(LocatedError(file: path, line: nil, field: "", reason: reason))
        }
        guard size <= maximumFileSize else { return failure("larger than \(maximumFileSize) bytes") }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return failure("cannot open: \(String(cString: strerror(errno)))") }
        defer { close(descriptor) }
        // Sized by stat; grown (up to the limit) if the file grew since.
        var bytes = [UInt8](repeating: 0, count: min(size, maximumFileSize) + 1)
        var total = 0
        while total < maximumFileSize + 1 {
            if total == bytes.count {
                bytes += [UInt8](repeating: 0, count: min(bytes.count, maximumFileSize + 1 - bytes.count))
            }
            let count = bytes.withUnsafeMutableBytes { buffer in
                Glibc.read(descriptor, buffer.baseAddress! + total, buffer.count - total)
            }
            if count < 0 {
                if errno == EINTR { continue }
                return failure("cannot read: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            total += count
        }
        guard total <= maximumFileSize else { return failure("larger than \(maximumFileSize) bytes") }
        guard let text = String(validating: bytes[..<total], as: UTF8.self) else { return failure("not UTF-8") }
        return .success(text)
    }
}
