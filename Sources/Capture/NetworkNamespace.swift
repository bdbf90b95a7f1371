import CNetfilter

#if canImport(Glibc)
    import Glibc
#endif

/// Moves the calling thread into a network namespace, so that the netlink socket it
/// opens next programs that namespace. A node agent runs `capture install --netns` from
/// the host: no container of the pod needs NET_ADMIN.
public enum NetworkNamespace {
    /// `name` is one of `ip netns` (`/run/netns/NAME`) or a path such as
    /// `/proc/PID/ns/net`.
    public static func enter(_ name: String) throws(CaptureOptionError) {
        let path = name.contains("/") ? name : "/run/netns/\(name)"
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw CaptureOptionError("--netns \(name): cannot open \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        guard beemesh_enter_network_namespace(descriptor) == 0 else {
            throw CaptureOptionError(
                "--netns \(name): cannot enter the namespace at \(path): \(String(cString: strerror(errno)))"
            )
        }
    }
}
