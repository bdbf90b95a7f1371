import Foundation
import MeshAPI
import MeshNet
import MeshTestSupport
import Testing

/// The node agent on real podman: the demo manifests (frontend → orders) applied with
/// `beectl`, pods with injected sidecars, frontend reaching `orders.default.mesh`, a
/// denying policy, a killed app container, a killed and restarted agent, bad
/// manifests, deletion. Needs root, podman with runc, busybox-static and curl
/// (`tools/setup` installs them); the images are built from this build's binaries.
@Suite(.serialized) struct PodmanEndToEndTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    var beectl: String { NamespaceLab.binaries + "/beectl" }
    private var agentBinary: String { NamespaceLab.binaries + "/beemesh-agent" }

    /// One agent with its own state, sockets, podman service socket and pod directory.
    final class Node: @unchecked Sendable {
        let directory = TemporaryDirectory()
        let runDirectory = "/run/beemesh-test-\(getpid())"
        var agent: ChildProcess?
        var socket: String { directory.path + "/api/agent.sock" }
        var policies: String { directory.path + "/policies" }

        /// SIGTERM (or `signal`), then SIGKILL if it is still there after 10 s.
        func stopAgent(signal: Int32 = SIGTERM) {
            guard let agent, agent.isRunning else { return }
            agent.signal(signal)
            let deadline = Date() + 10
            while agent.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            agent.signal(SIGKILL)
            agent.waitUntilExit()
        }

        deinit {
            stopAgent(signal: SIGKILL)
            try? FileManager.default.removeItem(atPath: runDirectory)
        }
    }

    @Test func theDemoRunsOnPodmanWithSidecarsPoliciesRestartsAndDeletion() async throws {
        try await blocking { try demo() }
    }

    private func demo() throws {
        guard let lock = Self.lock() else { return }
        defer { close(lock) }
        // Pods an earlier run left when it was killed.
        for pod in ["orders-0.default", "frontend-0.default"] {
            _ = try? runProcess(["podman", "pod", "rm", "-f", pod], input: [], timeout: 60)
        }
        let node = Node()
        try prepare(node)
        defer {
            cleanUp(node, pods: ["orders-0.default", "frontend-0.default", "\(Self.longName).\(Self.longNamespace)"])
        }
        try startAgent(node, log: "agent-1.log")
        do {
            try run(node)
        } catch {
            Issue.record("\(error)\n\(diagnostics(node))")
        }
    }

    /// podman's pod names are global: a second run on this machine would fight this
    /// one over them, so it is refused while this one holds the lock (nil, recorded).
    static func lock() -> Int32? {
        let lock = open("/run/beemesh-podman-e2e.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard lock >= 0, flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            if lock >= 0 { close(lock) }
            Issue.record("another PodmanEndToEndTests run holds /run/beemesh-podman-e2e.lock; not starting")
            return nil
        }
        return lock
    }

    /// The images built from this build, a trust domain with node-1's CA, the demo's
    /// allowing policy, and the agent's configuration.
    func prepare(_ node: Node) throws {
        let directory = node.directory.path
        try NamespaceLab.run([Self.root + "/deploy/build-images", NamespaceLab.binaries], timeout: 120)
        try NamespaceLab.run([beectl, "ca", "init", "--trust-domain", "demo.local", "--dir", directory + "/ca"])
        try NamespaceLab.run([
            beectl, "ca", "intermediate", "--dir", directory + "/ca", "--name", "node-1", "--out", directory + "/node",
        ])
        try FileManager.default.createDirectory(atPath: node.policies, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: Self.root + "/deploy/policies/demo-allow.yaml",
            toPath: node.policies + "/demo-allow.yaml"
        )
        try """
        node: {name: node-1, ca: \(directory)/node, stateDirectory: \(directory)/state}
        dht: {listen: 127.0.0.1:\(try freePort())}
        api: {socket: \(node.socket)}
        pods:
          podmanSocket: \(node.runDirectory)/podman.sock
          runDirectory: \(node.runDirectory)/pods
          policies: \(node.policies)
        """.write(toFile: directory + "/podman-agent.yaml", atomically: true, encoding: .utf8)
    }

    private func run(_ node: Node) throws {
        let directory = node.directory.path

        // Bad manifests are refused with their place and change nothing.
        let bad = directory + "/bad.yaml"
        for (manifest, reason) in [
            ("apiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec: {}", "bad.yaml:2: kind: unknown kind 'Job'"),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a}]}",
                "bad.yaml:4: spec.containers[0].image: is required"
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: X_1}\nspec: {containers: [{name: a, image: i}]}",
                "bad.yaml:3: metadata.name: 'X_1' is not a valid name"
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, image: i, ports: [{containerPort: 80}, {containerPort: 80}]}]}",
                "duplicate port 80"
            ),
        ] {
            try manifest.write(toFile: bad, atomically: true, encoding: .utf8)
            let (status, output) = try runProcess([beectl, "apply", "-f", bad, "--agent", node.socket], input: [])
            #expect(status == 1 && output.contains(reason), "\(output)")
        }
        #expect(try pods(node).isEmpty)

        // The demo: both pods run with their sidecars; frontend reaches orders by name.
        let applied = try NamespaceLab.run([
            beectl, "apply", "-f", Self.root + "/deploy/manifests/demo.yaml", "--agent", node.socket,
        ])
        #expect(applied.contains("deployment/orders created") && applied.contains("service/orders created"))
        try waitUntil("both pods running with their sidecars", timeout: 90) {
            let pods = try self.pods(node)
            return pods.count == 2 && pods.allSatisfy { $0.phase == "Running" && $0.containers.count == 2 }
        }
        let answer = try waitForAnswer(node, matching: "orders-0 answered")

        // Finding 8 of the node security review (c7e302b): a 63-character pod name in a
        // 40-character namespace made a 141-byte socket path; the pod stayed Pending and
        // each retry held the reconciler for 15 s. Pod directories are digests now.
        let longPod = directory + "/long.yaml"
        try """
        apiVersion: v1
        kind: Pod
        metadata: {name: \(Self.longName), namespace: \(Self.longNamespace)}
        spec:
          containers: [{name: app, image: localhost/beemesh-demo-app:latest, command: [/bin/sleep, "3600"]}]
        """.write(toFile: longPod, atomically: true, encoding: .utf8)
        try NamespaceLab.run([beectl, "apply", "-f", longPod, "--agent", node.socket])
        try waitUntil("the long-named pod runs", timeout: 60) {
            try self.pods(node).first { $0.name == Self.longName }?.phase == "Running"
        }
        try NamespaceLab.run([beectl, "delete", "-f", longPod, "--agent", node.socket])
        // The orders app only ever sees its own sidecar (loopback), never frontend's address.
        #expect(answer.contains("(peer [::ffff:127.0.0.1])"), "\(answer)")
        // `beectl logs -f` streams: frontend logs a line a second.
        let followed = node.directory.path + "/followed.log"
        let follower = try ChildProcess.start(
            [beectl, "logs", "frontend-0", "-f", "--tail", "0", "--agent", node.socket],
            output: .file(followed)
        )
        func streamed() -> String { (try? String(contentsOfFile: followed, encoding: .utf8)) ?? "" }
        let streaming = Result {
            try waitUntil("two lines followed", timeout: 15) { streamed().split(separator: "\n").count >= 2 }
        }
        follower.signal(SIGKILL)
        follower.waitUntilExit()
        #expect((try? streaming.get()) != nil, "followed: \(streamed())")
        let (missing, why) = try runProcess(
            [beectl, "logs", "frontend-0", "-c", "nosuch", "--agent", node.socket],
            input: []
        )
        #expect(missing == 1 && why.contains("no such pod or container"), "\(why)")

        // Finding 7 of the node security review (c7e302b): each `logs -f` of a quiet
        // container left a thread behind when its reader went (150 requests: 6 -> 156
        // threads). Readers that go now take their threads with them, and at most 32
        // streams are open at once.
        let agentPID = try #require(node.agent?.pid)
        func threads() -> Int {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(agentPID)/task").count) ?? -1
        }
        let before = threads()
        var readers: [BlockingSocket] = []
        for _ in 0..<40 {
            let reader = try BlockingSocket(unixPath: node.socket)
            try reader.send("GET /v1/logs/default/orders-0?follow=1&tail=0 HTTP/1.1\r\nHost: agent\r\n\r\n")
            readers.append(reader)
        }
        let answers = try readers.map { String(decoding: try $0.receive(atMost: 512), as: UTF8.self) }
        #expect(answers.filter { $0.hasPrefix("HTTP/1.1 200") }.count == 32, "\(answers.map { $0.prefix(30) })")
        #expect(answers.filter { $0.hasPrefix("HTTP/1.1 429") }.count == 8)
        readers.removeAll()  // every reader goes, while orders stays quiet
        try waitUntil("the log threads end", timeout: 10) { threads() <= before + 2 }

        // Finding 3 of the node security review (c7e302b): root in an app container
        // switched to uid/gid 1337, the sidecar's, and its traffic left capture. App
        // containers now hold neither SETUID nor SETGID, and no-new-privileges.
        // The attacker brings util-linux's setpriv (busybox's cannot change ids).
        let app = "frontend-0.default.frontend"
        let capNG = try NamespaceLab.run(["readlink", "-f", "/lib/x86_64-linux-gnu/libcap-ng.so.0"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        try NamespaceLab.run(["podman", "cp", "/usr/bin/setpriv", app + ":/tmp/setpriv"])
        try NamespaceLab.run(["podman", "cp", capNG, app + ":/lib/x86_64-linux-gnu/libcap-ng.so.0"])
        let switched = try exec(["/tmp/setpriv", "--reuid=1337", "--regid=1337", "--clear-groups", "busybox", "true"])
        #expect(switched.status != 0 && switched.output.contains("not permitted"), "\(switched.output)")
        let status = try exec(["busybox", "cat", "/proc/self/status"]).output
        #expect(status.contains("NoNewPrivs:\t1"), "\(status)")
        // Finding 4: the sidecar holds enough descriptors for its job.
        let sidecarPID = try NamespaceLab.run([
            "podman", "inspect", "--format", "{{.State.Pid}}", "orders-0.default.beemesh-proxy",
        ]).trimmingCharacters(in: .whitespacesAndNewlines)
        let limits = try String(contentsOfFile: "/proc/\(sidecarPID)/limits", encoding: .utf8)
        #expect(
            limits.split(separator: "\n").contains { $0.hasPrefix("Max open files") && $0.contains("16384") },
            "\(limits)"
        )

        let ordersIP = try #require(try pods(node).first { $0.name == "orders-0" }?.ip)
        let (direct, _) = try runProcess(
            ["curl", "-sS", "-m", "3", "http://\(ordersIP):8080/cgi-bin/hello"],
            input: []
        )
        #expect(direct != 0, "a plaintext client outside the mesh is not admitted")

        // A denying policy: requests fail within a second, and show as denied.
        try FileManager.default.copyItem(
            atPath: Self.root + "/deploy/policies/demo-deny.yaml",
            toPath: node.policies + "/demo-deny.yaml"
        )
        var denied = (status: Int32(0), output: "")
        try? waitUntil("the deny policy is in force", timeout: 15) {
            denied = try exec(["curl", "-sS", "-m", "3", "http://orders.default.mesh:8080/cgi-bin/hello"])
            return denied.status != 0
        }
        #expect(denied.status != 0, "\(denied.output)")
        let flows = try flowList(node, ["--verdict", "denied", "--pod", "orders-*"])
        #expect(
            flows.contains { $0.policy == "default/orders-deny-frontend" && $0.pod == "default/orders-0" },
            "\(flows.map { "\($0.pod ?? "-") \($0.verdict) \($0.policy ?? "-")" }) \(denied.output)\n\(diagnostics(node))"
        )
        try FileManager.default.removeItem(atPath: node.policies + "/demo-deny.yaml")
        var allowed = (status: Int32(-1), output: "")
        try? waitUntil("the deny policy is gone", timeout: 15) {
            allowed = try exec(["curl", "-sS", "-m", "3", "http://orders.default.mesh:8080/cgi-bin/hello"])
            return allowed.status == 0
        }
        #expect(allowed.status == 0, "\(allowed.output)\n\(diagnostics(node))")

        // A killed app container is restarted.
        try NamespaceLab.run(["podman", "kill", "orders-0.default.orders"])
        try waitUntil("the killed container restarted", timeout: 30) {
            let orders = try self.pods(node).first { $0.name == "orders-0" }
            return orders?.phase == "Running" && (orders?.restarts ?? 0) >= 1
        }

        // The agent dies (SIGKILL) and comes back: the pods ran on, and are adopted.
        let infraBefore = try NamespaceLab.run([
            "podman", "pod", "inspect", "orders-0.default", "--format", "{{.InfraContainerID}}",
        ])
        node.stopAgent(signal: SIGKILL)
        #expect(try exec(["curl", "-sS", "-m", "3", "http://orders.default.mesh:8080/cgi-bin/hello"]).status == 0)
        try startAgent(node, log: "agent-2.log")
        try waitUntil("the pods are reported again", timeout: 30) {
            try self.pods(node).filter { $0.phase == "Running" }.count == 2
        }
        let infraAfter = try NamespaceLab.run([
            "podman", "pod", "inspect", "orders-0.default", "--format", "{{.InfraContainerID}}",
        ])
        #expect(infraAfter == infraBefore, "the pod was not recreated")
        let deployments = try NamespaceLab.run([beectl, "get", "deployments", "--agent", node.socket])
        #expect(deployments.contains("orders") && deployments.contains("frontend"), "\(deployments)")
        _ = try waitForAnswer(node, matching: "orders-0 answered")

        // Deleting the manifest removes the pods.
        try NamespaceLab.run([
            beectl, "delete", "-f", Self.root + "/deploy/manifests/demo.yaml", "--agent", node.socket,
        ])
        try waitUntil("the pods are gone", timeout: 60) {
            let (status, _) = try runProcess(["podman", "pod", "exists", "orders-0.default"], input: [])
            let (other, _) = try runProcess(["podman", "pod", "exists", "frontend-0.default"], input: [])
            return status != 0 && other != 0
        }
    }

    // MARK: helpers

    func startAgent(_ node: Node, log: String) throws {
        node.agent = try ChildProcess.start(
            [agentBinary, "run", "--config", node.directory.path + "/podman-agent.yaml"],
            output: .file(node.directory.path + "/" + log)
        )
        try waitUntil("the agent's API answers", timeout: 30) {
            AdminClient(endpoint: .unix(path: node.socket), timeout: 1).isReachable()
        }
    }

    func pods(_ node: Node) throws -> [PodStatus] {
        try AdminClient(endpoint: .unix(path: node.socket)).get("/v1/pods", as: [PodStatus].self)
    }

    private func flowList(_ node: Node, _ arguments: [String]) throws -> [FlowRecord] {
        let output = try NamespaceLab.run([beectl, "flows", "--agent", node.socket, "-o", "json"] + arguments)
        return try MeshJSON.decoder().decode(FlowList.self, from: Data(output.utf8)).flows
    }

    /// A command in frontend's app container (its traffic is captured like the app's).
    private func exec(_ command: [String]) throws -> (status: Int32, output: String) {
        try runProcess(["podman", "exec", "frontend-0.default.frontend"] + command, input: [], timeout: 15)
    }

    /// frontend's newest log line once it contains `text`.
    private func waitForAnswer(_ node: Node, matching text: String) throws -> String {
        var last = ""
        try waitUntil("frontend logs '\(text)'", timeout: 45) {
            last = try NamespaceLab.run([beectl, "logs", "frontend-0", "--tail", "1", "--agent", node.socket])
            return last.contains(text)
        }
        return last
    }

    /// What the agent saw, for a failure's message.
    func diagnostics(_ node: Node) -> String {
        let pods = (try? runProcess([beectl, "get", "pods", "-o", "wide", "--agent", node.socket], input: []))?.output
        let logs = ["agent-1.log", "agent-2.log"].compactMap { name in
            (try? String(contentsOfFile: node.directory.path + "/" + name, encoding: .utf8))
                .map { "\(name):\n" + $0.split(separator: "\n").suffix(15).joined(separator: "\n") }
        }
        return (pods ?? "") + "\n" + logs.joined(separator: "\n")
    }

    static let longName = String(repeating: "l", count: 62) + "0"
    static let longNamespace = String(repeating: "n", count: 39) + "0"

    func cleanUp(_ node: Node, pods: [String]) {
        for pod in pods {
            _ = try? runProcess(["podman", "pod", "rm", "-f", pod], input: [], timeout: 60)
        }
        node.stopAgent()
        // The podman service the first (killed) agent started outlives it: stopped by the
        // PID that agent recorded, if that process is still the service on our socket.
        let socket = node.runDirectory + "/podman.sock"
        if let text = try? String(contentsOfFile: socket + ".pid", encoding: .utf8),
            let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
            let command = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8),
            command.contains(socket)
        {
            kill(pid, SIGTERM)
        }
    }
}
