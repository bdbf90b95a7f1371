import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Small file helpers for PEM material: atomic replace (write a temporary file in the
/// same directory, fsync, rename) so a reader never sees half a certificate, and
/// private keys created with mode 0600 from the start.
public enum PEMFile {
    public static func read(_ path: String) throws(IdentityError) -> String {
        do {
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw IdentityError(.io, "cannot read \(path): \(error.localizedDescription)")
        }
    }

    public static func createDirectory(_ path: String) throws(IdentityError) {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw IdentityError(.io, "cannot create \(path): \(error.localizedDescription)")
        }
    }

    /// Replaces `path` atomically with `contents`, created with `mode`.
    public static func write(_ path: String, _ contents: String, mode: mode_t = 0o644) throws(IdentityError) {
        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw IdentityError(.io, "cannot create \(temporary): \(String(cString: strerror(errno)))")
        }
        let bytes = Array(contents.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                close(fd)
                unlink(temporary)
                throw IdentityError(.io, "cannot write \(temporary): \(reason)")
            }
            written += n
        }
        fchmod(fd, mode)
        fsync(fd)
        close(fd)
        guard rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw IdentityError(.io, "cannot rename \(temporary) to \(path): \(reason)")
        }
    }
}
