import MeshNet
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Tells when a directory's entries change, through inotify: writes, atomic renames
/// (how configuration tools replace files) and symlink swaps (how Kubernetes updates
/// ConfigMap volumes, by renaming `..data`). Changes are coalesced for `settle`, then
/// `onChange` runs on the watcher's own thread. A directory that does not exist yet is
/// looked for every second.
public final class PolicyWatcher: @unchecked Sendable {
    private let directory: String
    private let settle: Duration
    private let onChange: @Sendable () -> Void
    private let stopped = Atomic(false)

    public init(directory: String, settle: Duration = .milliseconds(50), onChange: @escaping @Sendable () -> Void) {
        self.directory = directory
        self.settle = settle
        self.onChange = onChange
    }

    public func start() throws(SystemThread.StartFailed) {
        try SystemThread.start(name: "beemesh-policy") { [self] in run() }
    }

    /// Stops within about 100 ms.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
    }

    private var isStopped: Bool { stopped.load(ordering: .relaxed) }

    private func run() {
        let descriptor = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard descriptor >= 0 else { return }
        defer { close(descriptor) }
        let mask = UInt32(
            IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_ATTRIB | IN_DELETE_SELF
                | IN_MOVE_SELF
        )
        var watch: Int32 = -1
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var pendingSince: ContinuousClock.Instant?
        while !isStopped {
            if watch < 0 {
                watch = inotify_add_watch(descriptor, directory, mask)
                if watch >= 0 {
                    pendingSince = .now  // it appeared: read it
                } else {
                    sleep(1)
                    continue
                }
            }
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 100)
            if ready > 0 {
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count > 0 {
                    pendingSince = pendingSince ?? .now
                    if Self.watchEnded(buffer, count: count) {
                        inotify_rm_watch(descriptor, watch)
                        watch = -1
                    }
                }
            }
            if let since = pendingSince, ContinuousClock.now - since >= settle {
                pendingSince = nil
                onChange()
            }
        }
    }

    /// Whether the watched directory itself went away or was renamed (or the watch was
    /// dropped): it must be watched again once it is back.
    private static func watchEnded(_ buffer: [UInt8], count: Int) -> Bool {
        var offset = 0
        var ended = false
        buffer.withUnsafeBytes { raw in
            while offset + MemoryLayout<inotify_event>.size <= count {
                let mask = raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                let length = Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                if mask & UInt32(IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED) != 0 { ended = true }
                offset += MemoryLayout<inotify_event>.size + length
            }
        }
        return ended
    }
}
