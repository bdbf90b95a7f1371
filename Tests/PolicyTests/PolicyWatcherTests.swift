import Foundation
import MeshTestSupport
import Policy
import Synchronization
import Testing

/// The policy directory watcher on a real directory, with real inotify: what wakes it
/// and what does not. Each test names its thread, to find it in /proc/self/task.
@Suite struct PolicyWatcherTests {
    @Test func reportsWritesRenamesAndADirectoryThatAppearsLaterOnce() async throws {
        let parent = TemporaryDirectory()
        let directory = parent.path + "/policies"
        let changes = Atomic(0)
        // A settle time long enough that a busy CI machine still writes three times in it.
        let watcher = PolicyWatcher(directory: directory, settle: .milliseconds(300), threadName: "bm-pw-changes") {
            changes.add(1, ordering: .relaxed)
        }
        try watcher.start()
        defer { watcher.stop() }

        // Missing at start: found within a second of appearing, and read once.
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        try await waitUntil("the directory that appeared is read") { changes.load(ordering: .relaxed) == 1 }

        // Three writes inside the settle time are one change.
        for index in 0..<3 {
            try "rule \(index)".write(toFile: directory + "/a.yaml", atomically: false, encoding: .utf8)
        }
        try await waitUntil("three writes are one change") { changes.load(ordering: .relaxed) == 2 }
        try await Task.sleep(for: .milliseconds(600))
        #expect(changes.load(ordering: .relaxed) == 2)

        // An atomic replace (write aside, rename over).
        try "replaced".write(toFile: directory + "/.b.tmp", atomically: false, encoding: .utf8)
        #expect(rename(directory + "/.b.tmp", directory + "/b.yaml") == 0)
        try await waitUntil("the rename is a change") { changes.load(ordering: .relaxed) == 3 }
    }

    @Test func anIdleWatcherDoesNotWakeAndStopsAtOnce() async throws {
        let directory = TemporaryDirectory()
        let name = "bm-pw-idle"
        let watcher = PolicyWatcher(directory: directory.path, threadName: name) {}
        try watcher.start()
        try await waitUntil("the watcher's thread runs") { Self.thread(named: name) != nil }
        let thread = try #require(Self.thread(named: name))

        // Let it read the directory once (settle), then count its wake-ups for 1 s.
        let woken = try await blocking {
            usleep(200_000)
            let before = Self.wakeUps(of: thread)
            sleep(1)
            return Self.wakeUps(of: thread).flatMap { after in before.map { after - $0 } }
        }
        // It polled every 100 ms before it waited on an eventfd: about 10 a second.
        #expect(try #require(woken) <= 1, "\(woken ?? -1) wake-ups in 1 s while idle")

        #expect(try await Self.stopTime(watcher, thread: thread) < .milliseconds(500))
    }

    @Test func stopsWhileWaitingForAMissingDirectory() async throws {
        let parent = TemporaryDirectory()
        let name = "bm-pw-missing"
        let watcher = PolicyWatcher(directory: parent.path + "/not-yet", threadName: name) {}
        try watcher.start()
        try await waitUntil("the watcher's thread runs") { Self.thread(named: name) != nil }
        let thread = try #require(Self.thread(named: name))
        try await Task.sleep(for: .milliseconds(100))
        // It looks for the directory once a second, but a stop does not wait for that.
        #expect(try await Self.stopTime(watcher, thread: thread) < .milliseconds(500))
    }

    /// Stops `watcher` and times until its thread has ended, watching from a thread of
    /// its own (not the test pool, which other suites keep busy); 3 s at most.
    static func stopTime(_ watcher: PolicyWatcher, thread: String) async throws -> Duration {
        try await blocking {
            let stopped = ContinuousClock.now
            watcher.stop()
            while wakeUps(of: thread) != nil && ContinuousClock.now - stopped < .seconds(3) {
                usleep(1000)
            }
            return ContinuousClock.now - stopped
        }
    }

    /// The thread id of this process's thread called `name`.
    static func thread(named name: String) -> String? {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.first { task in
            let comm = try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)
            return comm?.trimmingCharacters(in: .whitespacesAndNewlines) == name
        }
    }

    /// How often the thread went to sleep and was woken (voluntary context switches);
    /// nil once it has ended.
    static func wakeUps(of thread: String) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/task/\(thread)/status", encoding: .utf8) else {
            return nil
        }
        let line = status.split(separator: "\n").first { $0.hasPrefix("voluntary_ctxt_switches:") }
        return line.flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) }
    }
}
