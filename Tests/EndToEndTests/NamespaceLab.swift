import Foundation
import MeshNet
import MeshTestSupport

/// Two network namespaces, "a" and "b", joined by a veth pair, with IPv4 and IPv6
/// addresses: 10.77.N.1 / fd77:N::1 in a, 10.77.N.2 / fd77:N::2 in b. Needs root.
///
/// Names carry the process id and a per-lab number, so parallel tests and earlier
/// crashed runs never collide; `tearDown` deletes both namespaces (the veth pair and
/// every process-free socket go with them) and kills what the lab started. Call it
/// from a `defer`, so a failing test still cleans up.
final class NamespaceLab: @unchecked Sendable {
    let a: String
    let b: String
    let subnet: Int
    let directory = TemporaryDirectory()
    private var processes: [ChildProcess] = []
    private let lock = NSLock()

    var addressA: String { "10.77.\(subnet).1" }
    var addressB: String { "10.77.\(subnet).2" }
    var addressA6: String { "fd77:\(subnet)::1" }
    var addressB6: String { "fd77:\(subnet)::2" }

    /// The build directory: `beemesh-proxy` and `beectl` sit next to the test bundle.
    static let binaries = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        .deletingLastPathComponent().path

    /// The distribution's python3 (tools/setup installs it): readable by every uid,
    /// unlike a per-user interpreter under /root.
    static let python = "/usr/bin/python3"

    init(subnet: Int) throws {
        self.subnet = subnet
        let tag = "bm\(getpid() % 100_000)x\(subnet)"
        a = "\(tag)a"
        b = "\(tag)b"
        try Self.run(["ip", "netns", "add", a])
        try Self.run(["ip", "netns", "add", b])
        try Self.run(["ip", "link", "add", "\(a)0", "type", "veth", "peer", "name", "\(b)0"])
        try Self.run(["ip", "link", "set", "\(a)0", "netns", a])
        try Self.run(["ip", "link", "set", "\(b)0", "netns", b])
        for (namespace, v4, v6) in [(a, addressA, addressA6), (b, addressB, addressB6)] {
            try Self.run(["ip", "-n", namespace, "addr", "add", "\(v4)/24", "dev", "\(namespace)0"])
            try Self.run(["ip", "-n", namespace, "addr", "add", "\(v6)/64", "dev", "\(namespace)0", "nodad"])
            try Self.run(["ip", "-n", namespace, "link", "set", "lo", "up"])
            try Self.run(["ip", "-n", namespace, "link", "set", "\(namespace)0", "up"])
        }
    }

    func tearDown() {
        lock.withLock {
            for process in processes where process.isRunning {
                process.signal(SIGKILL)
                process.waitUntilExit()
            }
            processes = []
        }
        _ = try? runProcess(["ip", "netns", "del", a], input: [])
        _ = try? runProcess(["ip", "netns", "del", b], input: [])
        try? FileManager.default.removeItem(atPath: "/etc/netns/\(a)")
        try? FileManager.default.removeItem(atPath: "/etc/netns/\(b)")
    }

    /// Runs a command to completion; throws with its output when it fails.
    @discardableResult
    static func run(_ arguments: [String], timeout: Double = 10) throws -> String {
        let (status, output) = try runProcess(arguments, input: [], timeout: timeout)
        guard status == 0 else { throw LabError("\(arguments.joined(separator: " ")) exited \(status): \(output)") }
        return output
    }

    /// Runs a command inside `namespace`, optionally as another uid/gid.
    @discardableResult
    func run(in namespace: String, as user: UInt32? = nil, _ arguments: [String], timeout: Double = 10) throws
        -> String
    {
        try Self.run(Self.command(in: namespace, as: user, arguments), timeout: timeout)
    }

    /// The same, but returns the status instead of throwing.
    func attempt(in namespace: String, as user: UInt32? = nil, _ arguments: [String]) throws -> (Int32, String) {
        try runProcess(Self.command(in: namespace, as: user, arguments), input: [], timeout: 15)
    }

    /// Starts a long-running command in `namespace` (nil: on the host), killed by
    /// `tearDown` unless stopped before; its output goes to `log`.
    @discardableResult
    func start(in namespace: String?, as user: UInt32? = nil, _ arguments: [String], log: String) throws
        -> ChildProcess
    {
        let process = try ChildProcess.start(Self.command(in: namespace, as: user, arguments), output: .file(log))
        lock.withLock { processes.append(process) }
        return process
    }

    /// The resolv.conf that `ip netns exec` shows processes in `namespace` (removed by
    /// `tearDown`).
    func setResolvConf(in namespace: String, _ text: String) throws {
        let directory = "/etc/netns/\(namespace)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try text.write(toFile: directory + "/resolv.conf", atomically: true, encoding: .utf8)
    }

    static func command(in namespace: String?, as user: UInt32? = nil, _ arguments: [String]) -> [String] {
        var command = namespace.map { ["ip", "netns", "exec", $0] } ?? []
        if let user {
            command += ["setpriv", "--reuid", "\(user)", "--regid", "\(user)", "--clear-groups"]
        }
        return command + arguments
    }

    /// Waits until `namespace` has a TCP listener on `port`.
    func waitForListener(in namespace: String, port: Int, timeout: Double = 20) throws {
        let deadline = Date() + timeout
        while Date() < deadline {
            let output = try run(in: namespace, ["ss", "-Hltn", "sport = :\(port)"])
            if !output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw LabError("nothing listens on port \(port) in \(namespace) after \(timeout) s")
    }
}

/// Polls `condition` (errors count as false) until it holds or `timeout` seconds pass.
func waitUntil(_ what: String, timeout: Double, _ condition: () throws -> Bool) throws {
    let deadline = Date() + timeout
    while Date() < deadline {
        if (try? condition()) == true { return }
        Thread.sleep(forTimeInterval: 0.2)
    }
    throw LabError("timed out after \(timeout) s: \(what)")
}

struct LabError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
