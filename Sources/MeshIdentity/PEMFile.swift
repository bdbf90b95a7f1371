import MeshNet

#if canImport(Glibc)
    import Glibc
#endif

/// Small file helpers for PEM material: atomic replace (write a temporary file in the
/// same directory, fsync, rename) so a reader never sees half a certificate, and
/// private keys created with mode 0600 from the start.
public enum PEMFile {
    /// Reads a whole (small) text file with plain POSIX calls (`SystemFile`): the
    /// sidecar reads its files at start and on every rotation.
    public static func read(_ path: String, limit: Int = 4 << 20) throws(IdentityError) -> String {
        do {
            return try SystemFile.read(path, limit: limit)
        } catch {
            throw IdentityError(.io, error.description)
        }
    }

    public static func createDirectory(_ path: String) throws(IdentityError) {
        do {
            try SystemFile.createDirectories(path)
        } catch {
            throw IdentityError(.io, error.description)
        }
    }

    /// Replaces `path` atomically with `contents`, created with `mode`.
    public static func write(_ path: String, _ contents: String, mode: mode_t = 0o644) throws(IdentityError) {
        try write(path, bytes: Array(contents.utf8), mode: mode)
    }

    /// Replaces `path` atomically and durably with `bytes`: written to a temporary file,
    /// flushed, renamed over `path`, and the directory flushed, so that a crash leaves
    /// the old or the new contents, never a mix. (Also the agent's state files.)
    public static func write(_ path: String, bytes: [UInt8], mode: mode_t = 0o644) throws(IdentityError) {
        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw IdentityError(.io, "cannot create \(temporary): \(String(cString: strerror(errno)))")
        }
        if let code = SystemFile.writeAll(bytes, to: fd) {
            close(fd)
            unlink(temporary)
            throw IdentityError(.io, "cannot write \(temporary): \(String(cString: strerror(code)))")
        }
        fchmod(fd, mode)
        fsync(fd)
        close(fd)
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw IdentityError(.io, "cannot rename \(temporary) to \(path): \(reason)")
        }
        let directory = open(SystemFile.parent(of: path), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
    }
}
