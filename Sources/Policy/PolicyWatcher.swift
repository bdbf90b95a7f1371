import CLinux
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
///
/// The thread sleeps in `poll` until inotify has events, the settle time is up, or
/// `stop` signals its eventfd: an idle sidecar's watcher never wakes.
public final class PolicyWatcher: @unchecked Sendable {
    private let directory: String
    private let settle: Duration
    private let onChange: @Sendable () -> Void
    private let threadName: String
    private let stopped = Atomic(false)
    /// Signalled by `stop` (an eventfd). Without one (the process is out of
    /// descriptors) the thread looks at `stopped` every 100 ms instead.
    private let wake: CInt

    /// `threadName`: what `ps -L` and `/proc/PID/task/TID/comm` show (15 bytes kept).
    public init(
        directory: String,
        settle: Duration = .milliseconds(50),
        threadName: String = "beemesh-policy",
        onChange: @escaping @Sendable () -> Void
    ) {
        self.directory = directory
        self.settle = settle
        self.threadName = threadName
        self.onChange = onChange
        self.wake = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
    }

    deinit {
        // The thread holds the watcher until it returns, so nothing polls this any more.
        if wake >= 0 { close(wake) }
    }

    public func start() throws(SystemThread.StartFailed) {
        try SystemThread.start(name: threadName) { [self] in run() }
    }

    /// Stops the thread at once (within 100 ms without an eventfd).
    public func stop() {
        stopped.store(true, ordering: .sequentiallyConsistent)
        if wake >= 0 {
            var one: UInt64 = 1
            _ = write(wake, &one, 8)
        }
    }

    private var isStopped: Bool { stopped.load(ordering: .sequentiallyConsistent) }

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
                    waitForStop(upTo: 1000)
                    continue
                }
            }
            var polled = [
                pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0),
                pollfd(fd: wake, events: Int16(POLLIN), revents: 0),
            ]
            let ready = poll(&polled, wake >= 0 ? 2 : 1, timeout(settlingSince: pendingSince))
            if ready > 0 && polled[0].revents != 0 {
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

    /// Milliseconds `poll` may sleep: until the settle time of pending changes is up,
    /// else for good (or 100 ms, to look at `stopped`, without an eventfd).
    private func timeout(settlingSince since: ContinuousClock.Instant?) -> Int32 {
        guard let since else { return wake >= 0 ? -1 : 100 }
        let left = settle - (ContinuousClock.now - since)
        guard left > .zero else { return 0 }
        let milliseconds = Int32(clamping: Int64((left / .milliseconds(1)).rounded(.up)))
        return wake >= 0 ? milliseconds : min(milliseconds, 100)
    }

    /// Sleeps up to `milliseconds`, or until `stop`.
    private func waitForStop(upTo milliseconds: Int32) {
        guard wake >= 0 else {
            usleep(UInt32(min(milliseconds, 100)) * 1000)
            return
        }
        var polled = pollfd(fd: wake, events: Int16(POLLIN), revents: 0)
        _ = poll(&polled, 1, milliseconds)
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
