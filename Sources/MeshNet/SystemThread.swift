import CLinux

#if canImport(Glibc)
    import Glibc
#endif

/// A detached POSIX thread for a loop that owns its own blocking calls (the direct
/// relay loops, the policy watcher), without Foundation's `Thread`.
public enum SystemThread {
    /// An error from `pthread_create` (`EAGAIN` when the process or the system is out
    /// of threads).
    public struct StartFailed: Error, CustomStringConvertible {
        public let code: Int32
        public var description: String { "cannot start a thread: \(String(cString: strerror(code)))" }
    }

    private final class Body {
        let name: String
        let run: () -> Void
        init(name: String, run: @escaping () -> Void) {
            self.name = name
            self.run = run
        }
    }

    /// Runs `body` on a new detached thread named `name` (at most 15 bytes are kept; the
    /// thread names itself, so `top -H` and `perf` show the loop, not its creator).
    public static func start(name: String, _ body: @escaping @Sendable () -> Void) throws(StartFailed) {
        let context = Unmanaged.passRetained(Body(name: name, run: body)).toOpaque()
        var thread = pthread_t()
        let code = pthread_create(
            &thread,
            nil,
            { context in
                let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
                _ = beemesh_name_thread(body.name)
                body.run()
                return nil
            },
            context
        )
        guard code == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            throw StartFailed(code: code)
        }
        pthread_detach(thread)
    }
}
