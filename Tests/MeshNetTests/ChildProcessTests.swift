import Dispatch
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

    /// Also one that closed its output and goes on running.
    @Test func aChildPastItsTimeoutIsKilled() throws {
        let slept = try ChildProcess.run(["sleep", "30"], timeout: 0.2)
        #expect(slept.status == 128 + SIGKILL)
        let quiet = try ChildProcess.run(["sh", "-c", "exec >&- 2>&-; sleep 30"], timeout: 0.2)
        #expect(quiet.status == 128 + SIGKILL)
    }

    /// Input for a child that exits without reading it: an EPIPE for the writer, not a
    /// SIGPIPE that would end this process.
    @Test func inputForAChildThatReadsNothing() throws {
        let ignored = try ChildProcess.run(["true"], input: [UInt8](repeating: 0x61, count: 1 << 20))
        #expect(ignored.status == 0)
    }

    /// Another thread can signal a child while one waits for it (the wait holds no
    /// lock): the signal is not stuck behind the wait.
    @Test func aWaitHoldsNoLock() throws {
        final class Outcome: @unchecked Sendable {  // written before `done` is signalled, read after
            var status: Int32 = 0
        }
        let child = try ChildProcess.start(["sleep", "30"])
        let outcome = Outcome()
        let waiting = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            waiting.signal()
            outcome.status = child.waitUntilExit()
            done.signal()
        }
        waiting.wait()
        usleep(50_000)  // into its wait; a signal sent before it works too, only less tested
        child.signal(SIGKILL)
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(outcome.status == 128 + SIGKILL)
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

    /// With hundreds of descriptors open in the parent (what crashed Foundation), none
    /// of them close-on-exec, every spawn works and the child sees only its standard
    /// input, output and error (and the directory `ls` opens to list them).
    @Test func aParentWithManyDescriptorsLeaksNoneToItsChildren() throws {
        var opened: [CInt] = []
        defer { for fd in opened { close(fd) } }
        for _ in 0..<600 {
            let fd = open("/dev/null", O_RDONLY)
            guard fd >= 0 else { break }
            opened.append(fd)
        }
        var ends: [CInt] = [-1, -1]
        #expect(pipe(&ends) == 0)
        opened += ends
        #expect(opened.count == 602)
        for _ in 0..<50 {
            let listed = try ChildProcess.run(["ls", "/proc/self/fd"])
            let descriptors = String(decoding: listed.output, as: UTF8.self).split(separator: "\n")
            #expect(listed.status == 0 && descriptors == ["0", "1", "2", "3"], "\(descriptors)")
        }
    }
}
