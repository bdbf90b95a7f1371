import Foundation
import MeshNet
import MeshTestSupport
import Testing

/// Three nodes of `tools/lab` (network namespaces on a LAN bridge, each with its own
/// podman service and agent): frontend on node 1 reaches orders on nodes 2 and 3 by
/// its mesh name over mutual TLS with the workload's identity checked end to end;
/// nothing of node 2's pod answers in plaintext from node 3 (its published ports, the
/// app port, and the pod's own address through a route an attacker added); and with
/// node 2 cut off the LAN, every request of frontend is still answered (by node 3);
/// and node 3, after a power loss and a boot, serves again from a pod rebuilt with its
/// capture.
/// Needs root and podman (`tools/setup`); the images are built from this build.
@Suite(.serialized) struct LabEndToEndTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// What the lab showed, asserted in the test's own task.
    struct Observed: Sendable {
        var endpoints: [String] = []
        var answeredBy: Set<String> = []
        /// The last inbound flow on node 2: its peer's identity and address.
        var inboundSource: (identity: String?, address: String?) = (nil, nil)
        /// probe → what came back (`refused`, `nothing`, or the first bytes).
        var plaintext: [(probe: String, reply: String)] = []
        var afterCut: [String] = []
        /// `nft list tables` in node 3's pod after the node lost power and booted.
        var captureAfterBoot = ""
        /// Node 3's host port table before the power loss and after its pod was rebuilt.
        var hostPortsBefore = ""
        var hostPortsAfter = ""
    }

    @Test func threeNodesServeAcrossNodesRefusePlaintextAndSurviveACut() async throws {
        let observed = try await blocking { try Self.runLab(name: "t\(getpid() % 1_000_000)") }
        #expect(observed.endpoints.count == 2, "\(observed.endpoints)")
        for (index, endpoint) in observed.endpoints.sorted().enumerated() {
            let parts = endpoint.split(separator: ":")
            #expect(parts.first == "10.250.0.\(index + 2)", "a node's address, not a pod's: \(endpoint)")
            #expect(parts.last.flatMap { UInt16($0) }.map { (30000...32767).contains($0) } == true, "\(endpoint)")
        }
        #expect(observed.answeredBy == ["orders-a-0", "orders-b-0"], "both nodes' replicas serve frontend")
        #expect(observed.inboundSource.identity == "spiffe://lab.local/ns/default/sa/frontend")
        #expect(observed.inboundSource.address?.hasPrefix("10.250.0.1:") == true, "it came from node 1")
        #expect(observed.plaintext.count >= 11, "\(observed.plaintext)")
        #expect(observed.plaintext.first?.reply.contains("HTTP/") == true, "the control answers: \(observed.plaintext)")
        // The route to the pod network works (so the refusals through it mean
        // something): the pod's 15008 accepts the connection (then says nothing to
        // plaintext), its 15000 answers with a reset.
        let replies = Dictionary(observed.plaintext, uniquingKeysWith: { first, _ in first })
        let pod = observed.plaintext.first { $0.probe.hasPrefix("10.88.2.") }?.probe.split(separator: ":").first
        #expect(pod.flatMap { replies["\($0):15008"] } == "nothing", "\(observed.plaintext)")
        #expect(pod.flatMap { replies["\($0):15000"] } == "refused ConnectionRefusedError", "\(observed.plaintext)")
        for (probe, reply) in observed.plaintext.dropFirst() {
            #expect(
                !reply.contains("HTTP/") && !reply.contains("answered") && !reply.contains("beemesh"),
                "plaintext \(probe) got an answer: \(reply)"
            )
        }
        #expect(observed.afterCut.count >= 8, "\(observed.afterCut)")
        for line in observed.afterCut {
            #expect(line.contains("orders-b-0 answered"), "after node 2 was cut: \(line)")
        }
        #expect(observed.captureAfterBoot.contains("table inet beemesh"), "\(observed.captureAfterBoot)")
        #expect(observed.hostPortsBefore.contains("\"orders-b-0.default\" : 3"), "\(observed.hostPortsBefore)")
        #expect(observed.hostPortsAfter == observed.hostPortsBefore, "the rebuilt pod keeps its host port")
    }

    @discardableResult
    static func lab(_ name: String, _ arguments: [String], timeout: Double = 30) throws -> String {
        try NamespaceLab.run(
            [root + "/tools/lab", "--name", name, "--bin", NamespaceLab.binaries] + arguments,
            timeout: timeout
        )
    }

    private static func runLab(name: String) throws -> Observed {
        var observed = Observed()
        _ = try? lab(name, ["down"], timeout: 120)  // what a killed earlier run left
        defer { _ = try? lab(name, ["down"], timeout: 120) }
        try lab(name, ["up", "3"], timeout: 300)
        try lab(name, ["demo", "--apply"], timeout: 300)

        // Frontend's answers, which name the replica that served each.
        func frontendLog() -> [String] {
            ((try? lab(name, ["exec", "1", "beectl", "logs", "frontend-0"])) ?? "").split(separator: "\n")
                .map(String.init)
        }
        func servedBy(_ lines: [String]) -> Set<String> {
            Set(
                lines.compactMap { line in line.split(separator: " ").dropFirst().first.map(String.init) }
                    .filter { $0.hasPrefix("orders-") }
            )
        }
        try waitUntil("frontend answered by both replicas", timeout: 180) {
            servedBy(frontendLog()).count == 2
        }
        observed.answeredBy = servedBy(frontendLog())

        let lookup = try lab(name, ["exec", "1", "beectl", "dht", "lookup", "orders.default", "--json"])
        let endpoints = (try JSONSerialization.jsonObject(with: Data(lookup.utf8)) as? [String: Any])?["endpoints"]
        observed.endpoints = (endpoints as? [[String: Any]] ?? []).compactMap { $0["endpoint"] as? String }

        let flows = try lab(name, ["exec", "2", "beectl", "flows", "--last", "1", "-o", "json"])
        let flow =
            ((try JSONSerialization.jsonObject(with: Data(flows.utf8)) as? [String: Any])?["flows"]
            as? [[String: Any]])?.first
        let source = flow?["source"] as? [String: Any]
        observed.inboundSource = (source?["identity"] as? String, source?["address"] as? String)

        observed.plaintext = try plaintextProbes(name: name)

        // Node 2 cut off the LAN: its packets vanish, nothing resets.
        let before = frontendLog().count
        try lab(name, ["cut", "2"])
        try waitUntil("ten requests of frontend after the cut", timeout: 40) { frontendLog().count >= before + 10 }
        observed.afterCut = Array(frontendLog().dropFirst(before))
        try lab(name, ["heal", "2"])

        // Node 3 loses power and boots: its pod is rebuilt with its capture (a pod
        // restarted container by container would get a namespace without it).
        let hostPorts = "/var/lib/beemesh-lab/\(name)/nodes/3/state/host-ports.json"
        observed.hostPortsBefore = try String(contentsOfFile: hostPorts, encoding: .utf8)
        try lab(name, ["kill", "3"])
        try lab(name, ["start", "3"], timeout: 120)
        let booted = frontendLog().count
        try waitUntil("frontend answered by node 3's rebuilt replica", timeout: 90) {
            frontendLog().dropFirst(booted).contains { $0.contains("orders-b-0 answered") }
        }
        let infra = try lab(name, ["exec", "3", "podman", "ps", "-q", "--filter", "name=infra"])
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let sandbox = try lab(
            name,
            ["exec", "3", "podman", "inspect", infra, "--format", "{{.NetworkSettings.SandboxKey}}"]
        ).trimmingCharacters(in: .whitespacesAndNewlines)
        observed.captureAfterBoot = try NamespaceLab.run(["nsenter", "--net=" + sandbox, "nft", "list", "tables"])
        observed.hostPortsAfter = try String(contentsOfFile: hostPorts, encoding: .utf8)
        return observed
    }

    /// From node 3, in plaintext, to everything of node 2 that listens on its LAN
    /// address, to the app port there, and, through a route to node 2's pod network
    /// (which no node has unless an attacker adds it), to every port of the pod.
    /// The first probe is a control: a plaintext HTTP server the test starts on node
    /// 2, which must answer (or the probe proves nothing).
    private static func plaintextProbes(name: String) throws -> [(probe: String, reply: String)] {
        let control = try ChildProcess.start([
            "nsenter", "--net=/run/netns/bm-\(name)-2", NamespaceLab.python, "-m", "http.server", "18080", "--bind",
            "10.250.0.2",
        ])
        defer {
            control.signal(SIGKILL)
            control.waitUntilExit()
        }
        try waitUntil("the control server listens", timeout: 20) {
            try lab(name, ["exec", "2", "ss", "-Hltn"]).contains("10.250.0.2:18080")
        }
        let listeners = try lab(name, ["exec", "2", "ss", "-Hltn"]).split(separator: "\n").compactMap { line in
            line.split(whereSeparator: \.isWhitespace).dropFirst(3).first.map(String.init)
        }
        .filter { $0.hasPrefix("10.250.0.2:") && $0 != "10.250.0.2:18080" }
        let pods = try lab(name, ["exec", "2", "beectl", "get", "pods", "-o", "wide"])
        guard
            let podIP = pods.split(separator: "\n").dropFirst().first?.split(whereSeparator: \.isWhitespace)
                .first(where: { $0.hasPrefix("10.88.2.") })
        else { throw LabError("no pod address on node 2 in: \(pods)") }
        try lab(name, ["exec", "3", "ip", "route", "add", "10.88.2.0/24", "via", "10.250.0.2"])
        let targets =
            ["10.250.0.2:18080"] + listeners + ["10.250.0.2:8080"]
            + [8080, 15000, 15001, 15006, 15008, 15053, 15090].map { "\(podIP):\($0)" }
        let script = """
            import socket, sys
            for target in sys.argv[1:]:
                host, port = target.rsplit(":", 1)
                try:
                    s = socket.create_connection((host, int(port)), timeout=2)
                    s.sendall(b"GET /cgi-bin/hello HTTP/1.0\\r\\nHost: orders\\r\\n\\r\\n")
                    s.settimeout(2)
                    data = b""
                    try:
                        while len(data) < 4096:
                            chunk = s.recv(4096)
                            if not chunk: break
                            data += chunk
                    except (socket.timeout, ConnectionResetError):
                        pass
                    print(target, repr(data[:200]) if data else "nothing")
                except (ConnectionRefusedError, ConnectionResetError, socket.timeout, OSError) as error:
                    print(target, "refused", type(error).__name__)
            """
        let output = try lab(name, ["exec", "3", NamespaceLab.python, "-c", script] + targets, timeout: 120)
        return output.split(separator: "\n").map { line in
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            return (parts[0], parts.count > 1 ? parts[1] : "")
        }
    }
}
