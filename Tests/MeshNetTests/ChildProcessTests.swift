import MeshNet
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Children started without Foundation's `Process` (which crashed in `run()` when the
/// parent held many descriptors): their output, input, exit status and signals, and
/// that they inherit no descriptor but the three standard ones.
@Suite struct ChildProcessTests {
    @Test func outputInputAndExitStatus() throws {
        let echoed = try ChildProcess.run(["sh", "-c", "cat; echo err >&2; exit 3"], input: Array("in\n".utf8))
        #expect(echoed.status == 3)
        #expect(String(decoding: echoed.output, as: UTF8.self) == "in\nerr\n")
        let missing = try ChildProcess.run(["sh", "-c", "exec /nonexistent/command"])
        #expect(missing.status == 127)
        #expect(throws: ChildProcess.StartFailed.self) { try ChildProcess.start(["/nonexistent/command"]) }
    }

    @Test func aChildPastItsTimeoutIsKilled() throws {
        let slept = try ChildProcess.run(["sleep", "30"], timeout: 0.2)
        #expect(slept.status == 128 + SIGKILL)
    }

    /// A signal the spawning thread blocks still reaches the child (its mask is reset),
    /// and SIGPIPE, which the runtime ignores, is at its default there (glibc keeps
    /// its own two real-time signals ignored).
    @Test func signalsAreAtTheirDefaultsInTheChild() throws {
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGTERM)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &blocked, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        let child = try ChildProcess.start(["sleep", "30"])
        child.terminate()
        #expect(child.waitUntilExit() == 128 + SIGTERM)
        #expect(!child.isRunning)
        child.signal(SIGKILL)  // gone and reaped: nothing is sent
        signal(SIGPIPE, SIG_IGN)
        let status = try ChildProcess.run(["grep", "SigIgn", "/proc/self/status"])
        let ignored = String(decoding: status.output, as: UTF8.self).split(separator: "\t").last
        let mask = try #require(UInt64(ignored?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "", radix: 16))
        #expect(mask & (1 << (UInt64(SIGPIPE) - 1)) == 0, "SigIgn \(String(mask, radix: 16))")
    }

    /// With hundreds of descriptors open in the parent (what crashed Foundation), every
    /// spawn works and the child sees only its standard input, output and error (and the
    /// directory `ls` opens to list them).
    @Test func aParentWithManyDescriptorsLeaksNoneToItsChildren() throws {
        var opened: [CInt] = []
        defer { for fd in opened { close(fd) } }
        for _ in 0..<600 {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { break }
            opened.append(fd)
        }
        #expect(opened.count == 600)
        for _ in 0..<50 {
            let listed = try ChildProcess.run(["ls", "/proc/self/fd"])
            let descriptors = String(decoding: listed.output, as: UTF8.self).split(separator: "\n")
            #expect(listed.status == 0 && descriptors == ["0", "1", "2", "3"], "\(descriptors)")
        }
    }
}
