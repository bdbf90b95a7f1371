import CLinux

#if canImport(Glibc)
    import Glibc
#endif

/// A child process started with `posix_spawnp`: what the agent runs (the podman service,
/// `beemesh-proxy capture install`) and what the tests start.
///
/// Foundation's `Process.run()` is not used: on this toolchain (Swift 6.3.1) it reads
/// past a buffer while it lists `/proc/self/fd`, and crashed whenever a process with
/// many descriptors spawned one (swift-corelibs-foundation#5472). Here the child gets
/// standard input, output and error as asked, every signal at its default disposition
/// with none blocked (a child of a thread that blocks SIGTERM can still be stopped),
/// and no other descriptor, whatever the libraries in this process left open.
public final class ChildProcess: @unchecked Sendable {
    /// Where the child's standard output and error go.
    public enum Output: Sendable {
        /// `/dev/null`.
        case discard
        /// Appended to this file (created if missing).
        case file(String)
        /// A pipe the parent reads (`run` collects it).
        case capture
    }

    /// Why a child could not be started.
    public struct StartFailed: Error, CustomStringConvertible {
        public let command: String
        public let code: Int32
        public var description: String { "cannot start \(command): \(String(cString: strerror(code)))" }
    }

    public let pid: pid_t
    /// The read end of the captured output (`.capture`), else -1.
    private let outputPipe: CInt
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private var status: Int32?

    private init(pid: pid_t, outputPipe: CInt) {
        self.pid = pid
        self.outputPipe = outputPipe
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
    }

    deinit {
        if status == nil { reap(WNOHANG) }  // one that ended is not left a zombie
        if outputPipe >= 0 { close(outputPipe) }
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    /// Starts `arguments[0]` (looked up in `PATH`) with `arguments`.
    /// - Parameters:
    ///   - environment: the child's whole environment; nil: this process's.
    ///   - input: written to the child's standard input, which is then closed; nil:
    ///     `/dev/null`.
    public static func start(
        _ arguments: [String],
        environment: [String: String]? = nil,
        input: [UInt8]? = nil,
        output: Output = .discard
    ) throws -> ChildProcess {
        precondition(!arguments.isEmpty, "ChildProcess: no command")
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var opened: [CInt] = []
        defer { for fd in opened { close(fd) } }
        func pipePair() throws -> (read: CInt, write: CInt) {
            var ends: [CInt] = [-1, -1]
            guard beemesh_pipe_cloexec(&ends) == 0 else { throw StartFailed(command: arguments[0], code: errno) }
            return (ends[0], ends[1])
        }

        var inputWriter: CInt = -1
        if input != nil {
            let (read, write) = try pipePair()
            opened.append(read)
            posix_spawn_file_actions_adddup2(&actions, read, 0)
            inputWriter = write
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        var outputReader: CInt = -1
        switch output {
        case .discard:
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        case .file(let path):
            posix_spawn_file_actions_addopen(&actions, 1, path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        case .capture:
            do {
                let (read, write) = try pipePair()
                opened.append(write)
                posix_spawn_file_actions_adddup2(&actions, write, 1)
                outputReader = read
            } catch {
                if inputWriter >= 0 { close(inputWriter) }
                throw error
            }
        }
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        posix_spawn_file_actions_addclosefrom_np(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        let environmentLines = environment.map { $0.map { "\($0.key)=\($0.value)" } }
        let envp = environmentLines.map { $0.map { strdup($0) } + [nil] }
        defer { envp?.forEach { free($0) } }
        var pid: pid_t = 0
        let result = argv.withUnsafeBufferPointer { argvBuffer in
            if let envp {
                return envp.withUnsafeBufferPointer { envpBuffer in
                    posix_spawnp(
                        &pid,
                        arguments[0],
                        &actions,
                        &attributes,
                        argvBuffer.baseAddress!,
                        envpBuffer.baseAddress!
                    )
                }
            }
            return posix_spawnp(&pid, arguments[0], &actions, &attributes, argvBuffer.baseAddress!, environ)
        }
        guard result == 0 else {
            if inputWriter >= 0 { close(inputWriter) }
            if outputReader >= 0 { close(outputReader) }
            throw StartFailed(command: arguments[0], code: result)
        }
        // The child's ends, closed here before any input is written: a write must see
        // the child's end go when the child does.
        for fd in opened { close(fd) }
        opened = []
        if inputWriter >= 0 {
            // Written whole, then closed so the child sees its end. A child that exits
            // without reading them is not an error.
            if let input { writeIgnoringSIGPIPE(input, to: inputWriter) }
            close(inputWriter)
        }
        return ChildProcess(pid: pid, outputPipe: outputReader)
    }

    /// Runs a command to its end (or `timeout`, after which it is killed), returning
    /// its exit status and everything it wrote to standard output and error.
    public static func run(
        _ arguments: [String],
        environment: [String: String]? = nil,
        input: [UInt8] = [],
        timeout: Double = 10
    ) throws -> (status: Int32, output: [UInt8]) {
        let child = try start(arguments, environment: environment, input: input, output: .capture)
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        let deadline = monotonicSeconds() + timeout
        var killed = false
        func killAtDeadline() {
            if !killed, monotonicSeconds() >= deadline {
                child.signal(SIGKILL)
                killed = true
            }
        }
        while true {
            var poller = pollfd(fd: child.outputPipe, events: Int16(POLLIN), revents: 0)
            killAtDeadline()
            // Short polls: a grandchild may keep the pipe open after the child is gone.
            let ready = poll(&poller, 1, 20)
            if ready > 0 {
                let count = read(child.outputPipe, &chunk, chunk.count)
                if count > 0 {
                    output += chunk[..<count]
                    continue
                }
                if count == 0 { break }
            }
            if child.exitStatus != nil {
                // Gone: take what is already in the pipe, without waiting for more.
                while poll(&poller, 1, 0) > 0, case let count = read(child.outputPipe, &chunk, chunk.count), count > 0 {
                    output += chunk[..<count]
                }
                break
            }
        }
        // Its output ended: the child may still run (it closed its output early).
        while child.isRunning {
            killAtDeadline()
            usleep(20_000)
        }
        return (child.waitUntilExit(), output)
    }

    /// Writes `bytes` with SIGPIPE blocked on this thread, so that a child that exited
    /// without reading costs an EPIPE here, not this process (a SIGPIPE it raised is
    /// taken back before the mask is restored).
    private static func writeIgnoringSIGPIPE(_ bytes: [UInt8], to fd: CInt) {
        var pipeSignal = sigset_t()
        sigemptyset(&pipeSignal)
        sigaddset(&pipeSignal, SIGPIPE)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &pipeSignal, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        if SystemFile.writeAll(bytes, to: fd) != nil {
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGPIPE) == 1, sigismember(&previous, SIGPIPE) == 0 {
                var now = timespec()
                _ = sigtimedwait(&pipeSignal, nil, &now)
            }
        }
    }

    /// The exit status once the child has ended (128 + the signal for one killed by a
    /// signal), nil while it runs. Reaps it.
    public var exitStatus: Int32? {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        if status == nil { reap(WNOHANG) }
        return status
    }

    public var isRunning: Bool { exitStatus == nil }

    /// Waits for the child to end; its exit status. The wait itself holds no lock, so
    /// another thread may signal the child meanwhile.
    @discardableResult
    public func waitUntilExit() -> Int32 {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0, errno == EINTR {}
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        while status == nil { reap(0) }
        return status ?? -1
    }

    /// Sends `signal` to the child, unless it has ended (and been reaped: its pid may
    /// be another process's by now).
    public func signal(_ signal: Int32) {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        if status == nil { reap(WNOHANG) }
        if status == nil { kill(pid, signal) }
    }

    /// SIGTERM.
    public func terminate() { signal(SIGTERM) }

    private func reap(_ options: Int32) {
        var raw: Int32 = 0
        let result = waitpid(pid, &raw, options)
        if result == pid {
            let signal = raw & 0x7f
            status = signal == 0 ? (raw >> 8) & 0xff : 128 + signal
        } else if result < 0, errno != EINTR {
            status = -1  // not our child any more (reaped elsewhere)
        }
    }

    private static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
