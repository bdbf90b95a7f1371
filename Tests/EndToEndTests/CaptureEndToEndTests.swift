import Capture
import Foundation
import MeshNet
import MeshTestSupport
import Testing

/// Transparent capture in real network namespaces: nftables programmed by
/// `beemesh-proxy capture install --netns`, two sidecars running as uid 1337, apps
/// that dial plain addresses. Needs root (CI runs as root), iproute2, nftables and
/// python3 (`tools/setup` installs them).
@Suite(.serialized) struct CaptureEndToEndTests {
    static let proxyUser: UInt32 = 1337
    static let appPort = 8080

    private var proxy: String { NamespaceLab.binaries + "/beemesh-proxy" }
    private var beectl: String { NamespaceLab.binaries + "/beectl" }

    /// A dual-stack server: answers `peer=<address> got=<bytes>` and logs each accept.
    private static let appScript = """
        import socket, sys, threading
        log = open(sys.argv[2], "a", buffering=1)
        server = socket.socket(socket.AF_INET6)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.bind(("::", int(sys.argv[1])))
        server.listen(16)
        def serve(connection, peer):
            connection.settimeout(5)
            data = connection.recv(1000)
            log.write("accepted %s %d\\n" % (peer[0], len(data)))
            connection.sendall(b"peer=" + peer[0].encode() + b" got=" + data)
            connection.close()
        while True:
            connection, peer = server.accept()
            threading.Thread(target=serve, args=(connection, peer)).start()
        """

    /// Sends `hello`, prints the answer. Exit 0: answered; 3: refused; 4: closed
    /// without an answer; 5: other error.
    private static let clientScript = """
        import errno, socket, sys
        try:
            connection = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
            connection.sendall(b"hello")
            answer = connection.recv(1000)
        except ConnectionRefusedError:
            print("refused"); sys.exit(3)
        except ConnectionResetError:
            print("reset"); sys.exit(4)
        except OSError as error:
            print("error", error); sys.exit(5)
        if not answer:
            print("closed"); sys.exit(4)
        print(answer.decode())
        """

    private func writeScripts(_ lab: NamespaceLab) throws -> (app: String, client: String) {
        // Readable by the proxy's uid too (the plaintext-peer case runs the client as it).
        try NamespaceLab.run(["chmod", "755", lab.directory.path])
        let app = lab.directory.path + "/app.py"
        let client = lab.directory.path + "/client.py"
        try Self.appScript.write(toFile: app, atomically: true, encoding: .utf8)
        try Self.clientScript.write(toFile: client, atomically: true, encoding: .utf8)
        return (app, client)
    }

    private func dial(
        _ lab: NamespaceLab,
        from namespace: String,
        as user: UInt32? = nil,
        _ host: String,
        _ port: Int,
        client: String
    ) throws -> (status: Int32, output: String) {
        let (status, output) = try lab.attempt(in: namespace, as: user, [NamespaceLab.python, client, host, "\(port)"])
        return (status, output.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// `capture show` in a namespace, as rule comment → packets.
    private func counters(_ lab: NamespaceLab, _ namespace: String) throws -> [String: UInt64] {
        let output = try NamespaceLab.run([proxy, "capture", "show", "--netns", namespace])
        var counters: [String: UInt64] = [:]
        for line in output.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", maxSplits: 4, omittingEmptySubsequences: true)
            guard fields.count == 5, let packets = UInt64(fields[2]) else { continue }
            let comment = fields[4].trimmingCharacters(in: .whitespaces)
            counters["\(fields[0]): \(comment)", default: 0] += packets
        }
        return counters
    }

    private func identities(_ lab: NamespaceLab) throws -> String {
        let directory = lab.directory.path
        try NamespaceLab.run([beectl, "ca", "init", "--trust-domain", "capture.test", "--dir", "\(directory)/ca"])
        for name in ["client", "app"] {
            try NamespaceLab.run([
                beectl, "ca", "issue", "--dir", "\(directory)/ca",
                "--spiffe-id", "spiffe://capture.test/ns/default/sa/\(name)", "--out", "\(directory)/\(name)",
            ])
            try NamespaceLab.run(["chown", "-R", "\(Self.proxyUser):\(Self.proxyUser)", "\(directory)/\(name)"])
        }
        return directory
    }

    private func sidecarConfig(
        _ directory: String,
        identity: String,
        routes: String
    ) -> String {
        """
        identity:
          certificate: \(directory)/\(identity)/cert.pem
          privateKey: \(directory)/\(identity)/key.pem
          trustBundle: \(directory)/\(identity)/bundle.pem
        inbound: {listen: "[::]:15008", ports: [\(Self.appPort)]}
        capture:
          outbound: [127.0.0.1:15001, "[::1]:15001"]
          inbound: [0.0.0.0:15006, "[::]:15006"]
        policies: {directory: \(directory)/policies-\(identity)}
        admin: {socket: \(directory)/\(identity)/admin.sock}
        routes: \(routes)
        """
    }

    /// Writes side `side`'s sidecar configuration (`<side>.yaml`) and, when given, the
    /// one policy file in its policy directory.
    private func writeSidecar(
        _ directory: String,
        side: String,
        identity: String,
        routes: String,
        policy: String? = nil
    ) throws {
        try sidecarConfig(directory, identity: identity, routes: routes)
            .write(toFile: "\(directory)/\(side).yaml", atomically: true, encoding: .utf8)
        guard let policy else { return }
        let policies = "\(directory)/policies-\(identity)"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        try policy.write(toFile: policies + "/policy.yaml", atomically: true, encoding: .utf8)
    }

    /// Starts side `side`'s sidecar in `namespace` as the proxy's user; it logs to `<side>.log`.
    private func startSidecar(_ lab: NamespaceLab, side: String, in namespace: String) throws {
        let directory = lab.directory.path
        try lab.start(
            in: namespace,
            as: Self.proxyUser,
            [proxy, "run", "--config", "\(directory)/\(side).yaml"],
            log: "\(directory)/\(side).log"
        )
    }

    /// Starts the test app in `namespace` on `port` (accepts logged to `log`) and waits
    /// until it listens.
    private func startApp(_ lab: NamespaceLab, script: String, in namespace: String, port: Int, log: String) throws {
        try lab.start(in: namespace, [NamespaceLab.python, script, "\(port)", log], log: log + ".out")
        try lab.waitForListener(in: namespace, port: port)
    }

    @Test func appTrafficGoesThroughBothSidecarsOverIPv4AndIPv6() async throws {
        try await blocking { try meshPath() }
    }

    private func meshPath() throws {
        let lab = try NamespaceLab(subnet: 11)
        defer { lab.tearDown() }
        let (app, client) = try writeScripts(lab)
        let directory = try identities(lab)
        let appIdentity = "spiffe://capture.test/ns/default/sa/app"
        let routes = """

              - service: app.default
                port: \(Self.appPort)
                match: [{network: \(lab.addressB), port: \(Self.appPort)}]
                endpoints: [{address: "\(lab.addressB):15008", identity: \(appIdentity)}]
              - service: app.default
                port: \(Self.appPort)
                match: [{network: "\(lab.addressB6)", port: \(Self.appPort)}]
                endpoints: [{address: "[\(lab.addressB6)]:15008", identity: \(appIdentity)}]
            """
        try writeSidecar(directory, side: "a", identity: "client", routes: routes)
        // b admits a's sidecar on the app port, and plaintext peers on 8081 only.
        try writeSidecar(
            directory,
            side: "b",
            identity: "app",
            routes: "[]",
            policy: """
                apiVersion: beemesh.io/v1
                kind: MeshPolicy
                metadata: {name: app, namespace: default}
                spec:
                  action: ALLOW
                  rules:
                    - from: [{identities: ["spiffe://capture.test/ns/default/sa/client"]}]
                      to: [{ports: [\(Self.appPort)]}]
                    - from: [{unauthenticated: true}]
                      to: [{ports: [8081]}]
                """
        )
        try NamespaceLab.run([proxy, "capture", "install", "--netns", lab.a])
        try NamespaceLab.run([proxy, "capture", "install", "--netns", lab.b])

        try startApp(lab, script: app, in: lab.b, port: Self.appPort, log: "\(directory)/b-app.log")
        try startSidecar(lab, side: "b", in: lab.b)
        try startSidecar(lab, side: "a", in: lab.a)
        try lab.waitForListener(in: lab.b, port: 15008)
        try lab.waitForListener(in: lab.a, port: 15001)

        // The app in a dials b's plain addresses; b's app sees its own sidecar (loopback).
        let v4 = try dial(lab, from: lab.a, lab.addressB, Self.appPort, client: client)
        #expect(v4.status == 0 && v4.output == "peer=::ffff:127.0.0.1 got=hello", "\(v4)")
        let v6 = try dial(lab, from: lab.a, lab.addressB6, Self.appPort, client: client)
        #expect(v6.status == 0 && v6.output == "peer=::ffff:127.0.0.1 got=hello", "\(v6)")

        // A destination no route names is outside the mesh: no egress policy, refused.
        let unknown = try dial(lab, from: lab.a, lab.addressB, 9999, client: client)
        #expect(unknown.status == 4, "\(unknown)")

        // A plaintext peer that skips its sidecar (uid 1337 is not captured in a) is
        // captured by b and refused: b's app sees nothing from it.
        let plaintext = try dial(lab, from: lab.a, as: Self.proxyUser, lab.addressB, Self.appPort, client: client)
        #expect(plaintext.status == 4, "\(plaintext)")

        // ... except on a port where b's policy admits unauthenticated peers.
        let openLog = "\(directory)/b-open.log"
        try startApp(lab, script: app, in: lab.b, port: 8081, log: openLog)
        let admitted = try dial(lab, from: lab.a, as: Self.proxyUser, lab.addressB, 8081, client: client)
        #expect(admitted.status == 0 && admitted.output == "peer=::ffff:127.0.0.1 got=hello", "\(admitted)")

        let appLog = try String(contentsOfFile: "\(directory)/b-app.log", encoding: .utf8)
        #expect(appLog == "accepted ::ffff:127.0.0.1 5\naccepted ::ffff:127.0.0.1 5\n", "b's app log: \(appLog)")

        // Counters: three app connections redirected in a (two routed, one refused);
        // a's sidecar's own upstream connections matched the uid rule, never the redirect.
        let countersA = try counters(lab, lab.a)
        #expect(countersA["outbound: outbound TCP to the proxy"] == 3, "\(countersA)")
        #expect((countersA["outbound: the proxy's own sockets (uid 1337)"] ?? 0) >= 3, "\(countersA)")
        let countersB = try counters(lab, lab.b)
        #expect(countersB["inbound: inbound TCP to the proxy"] == 2, "\(countersB)")
        #expect(countersB["inbound: the proxy's own listeners (mTLS, admin, metrics)"] == 2, "\(countersB)")

        // a's sidecar recorded the original destinations.
        let logA = try String(contentsOfFile: "\(directory)/a.log", encoding: .utf8)
        #expect(logA.contains("original_dst=\(lab.addressB):\(Self.appPort)"), "\(logA)")
        #expect(logA.contains("original_dst=[\(lab.addressB6)]:\(Self.appPort)"), "\(logA)")
        #expect(
            logA.contains("original_dst=\(lab.addressB):9999") && logA.contains("no egress policy allows it"),
            "\(logA)"
        )
        let logB = try String(contentsOfFile: "\(directory)/b.log", encoding: .utf8)
        #expect(logB.contains("refused plaintext inbound connection: no policy admits"), "\(logB)")
        #expect(logB.contains("plaintext inbound connection admitted by policy"), "\(logB)")
    }

    @Test func withoutAProxyTheConnectionFailsAndNoPlaintextLeaves() async throws {
        try await blocking { try failClosed() }
    }

    private func failClosed() throws {
        let lab = try NamespaceLab(subnet: 12)
        defer { lab.tearDown() }
        let (app, client) = try writeScripts(lab)
        let appLog = lab.directory.path + "/b-app.log"
        // b has no capture and no sidecar: a plaintext connection that leaked from a
        // would be accepted and logged here.
        try startApp(lab, script: app, in: lab.b, port: Self.appPort, log: appLog)
        try NamespaceLab.run([proxy, "capture", "install", "--netns", lab.a])

        let v4 = try dial(lab, from: lab.a, lab.addressB, Self.appPort, client: client)
        #expect(v4.status == 3, "\(v4)")
        let v6 = try dial(lab, from: lab.a, lab.addressB6, Self.appPort, client: client)
        #expect(v6.status == 3, "\(v6)")
        #expect((try String(contentsOfFile: appLog, encoding: .utf8)).isEmpty)

        // Hairpin: the pod dialling its own address stays inside the pod, uncaptured.
        let hairpinLog = lab.directory.path + "/a-app.log"
        try startApp(lab, script: app, in: lab.a, port: 9090, log: hairpinLog)
        let hairpin = try dial(lab, from: lab.a, lab.addressA, 9090, client: client)
        #expect(hairpin.status == 0 && hairpin.output == "peer=::ffff:\(lab.addressA) got=hello", "\(hairpin)")

        // Control: without the capture the same dial reaches b, so the refusal above
        // was the capture failing closed.
        try NamespaceLab.run([proxy, "capture", "remove", "--netns", lab.a])
        let direct = try dial(lab, from: lab.a, lab.addressB, Self.appPort, client: client)
        #expect(direct.status == 0 && direct.output.hasPrefix("peer=::ffff:\(lab.addressA)"), "\(direct)")
    }

    /// Finding 10 of the node security review (c7e302b): UDP to and from app ports
    /// passed in plaintext, from the app and from the host to the pod. Now everything
    /// but TCP is dropped both ways, unless `--allow-non-tcp`.
    @Test func nonTCPTrafficIsDroppedBothWaysUnlessAllowed() async throws {
        try await blocking { try nonTCP() }
    }

    private func nonTCP() throws {
        let lab = try NamespaceLab(subnet: 16)
        defer { lab.tearDown() }
        try NamespaceLab.run([proxy, "capture", "install", "--netns", lab.a])
        let outbound = try udpDelivered(lab, from: lab.a, to: lab.b, address: lab.addressB)
        let inbound = try udpDelivered(lab, from: lab.b, to: lab.a, address: lab.addressA)
        let outbound6 = try udpDelivered(lab, from: lab.a, to: lab.b, address: lab.addressB6)
        #expect(!outbound && !inbound && !outbound6, "UDP crossed the capture: \(outbound) \(inbound) \(outbound6)")
        let (pinged, _) = try runProcess(
            NamespaceLab.command(in: lab.a, ["ping", "-c", "1", "-W", "1", lab.addressB]),
            input: []
        )
        #expect(pinged != 0, "ICMP echo left the pod")
        let counters = try counters(lab, lab.a)
        #expect(
            (counters["outbound_filter: anything else from the app (UDP, ICMP, ...): dropped"] ?? 0) >= 2,
            "\(counters)"
        )
        #expect(
            (counters["inbound_filter: anything else to the pod (UDP, ICMP, ...): dropped"] ?? 0) >= 1,
            "\(counters)"
        )

        // Control: with --allow-non-tcp the same datagrams arrive.
        try NamespaceLab.run([proxy, "capture", "install", "--netns", lab.a, "--allow-non-tcp"])
        #expect(try udpDelivered(lab, from: lab.a, to: lab.b, address: lab.addressB))
        #expect(try udpDelivered(lab, from: lab.b, to: lab.a, address: lab.addressA))
    }

    /// One UDP datagram from `from` to `address`:9999 in `to`, and whether it arrived.
    private func udpDelivered(_ lab: NamespaceLab, from: String, to: String, address: String) throws -> Bool {
        let family = address.contains(":") ? "AF_INET6" : "AF_INET"
        let log = lab.directory.path + "/udp-\(UUID().uuidString).log"
        let receiver = try ChildProcess.start(
            NamespaceLab.command(
                in: to,
                [
                    NamespaceLab.python, "-c",
                    "import socket; s = socket.socket(socket.\(family), socket.SOCK_DGRAM); s.bind(('\(address)', 9999)); "
                        + "open('\(log)', 'w').write('ready'); s.settimeout(2)\n"
                        + "try: open('\(log)', 'w').write(s.recv(100).decode())\nexcept OSError: pass",
                ]
            )
        )
        let deadline = Date() + 10
        while !FileManager.default.fileExists(atPath: log), Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        // A datagram the output filter drops fails in the sender (EPERM): not an error here.
        _ = try runProcess(
            NamespaceLab.command(
                in: from,
                [
                    NamespaceLab.python, "-c",
                    "import socket; socket.socket(socket.\(family), socket.SOCK_DGRAM).sendto(b'leak', ('\(address)', 9999))",
                ]
            ),
            input: []
        )
        receiver.waitUntilExit()
        return (try? String(contentsOfFile: log, encoding: .utf8)) == "leak"
    }

    @Test func anEgressPolicyPassesADestinationOutsideTheMeshThroughInPlaintext() async throws {
        try await blocking { try egress() }
    }

    private func egress() throws {
        let lab = try NamespaceLab(subnet: 14)
        defer { lab.tearDown() }
        let (app, client) = try writeScripts(lab)
        let directory = try identities(lab)
        try startApp(lab, script: app, in: lab.b, port: Self.appPort, log: directory + "/b-app.log")
        // a may reach b's app port outside the mesh, nothing else.
        try writeSidecar(
            directory,
            side: "a",
            identity: "client",
            routes: "[]",
            policy: """
                apiVersion: beemesh.io/v1
                kind: EgressPolicy
                metadata: {name: to-b, namespace: default}
                spec:
                  action: ALLOW
                  rules: [{to: [{cidrs: ["\(lab.addressB)/32"], ports: [\(Self.appPort)]}]}]
                """
        )
        try NamespaceLab.run([proxy, "capture", "install", "--netns", lab.a])
        try startSidecar(lab, side: "a", in: lab.a)
        try lab.waitForListener(in: lab.a, port: 15001)

        // No route names b: the sidecar relays it in plaintext from its own socket (b's
        // app sees a's address), and that socket is not captured again (no loop).
        let dialled = try dial(lab, from: lab.a, lab.addressB, Self.appPort, client: client)
        #expect(dialled.status == 0 && dialled.output == "peer=::ffff:\(lab.addressA) got=hello", "\(dialled)")
        let counters = try counters(lab, lab.a)
        #expect(counters["outbound: outbound TCP to the proxy"] == 1, "\(counters)")
        #expect(counters["outbound: the proxy's own sockets (uid 1337)"] == 1, "\(counters)")
        let log = try String(contentsOfFile: "\(directory)/a.log", encoding: .utf8)
        #expect(
            log.contains("passed through in plaintext (allowed egress)") && log.contains("policy=default/to-b"),
            "\(log)"
        )
        // Another port of the same address: no egress policy allows it.
        let otherPort = try dial(lab, from: lab.a, lab.addressB, 9999, client: client)
        #expect(otherPort.status == 4, "\(otherPort)")
    }

    @Test func installIsIdempotentRemoveLeavesNothingAndNftAgrees() async throws {
        try await blocking { try tableLifecycle() }
    }

    private func tableLifecycle() throws {
        let lab = try NamespaceLab(subnet: 13)
        defer { lab.tearDown() }
        let arguments = [
            "--capture-dns", "--exclude-outbound-ports", "22,9000", "--exclude-outbound-cidrs",
            "169.254.0.0/16,fd00::/8", "--exclude-inbound-ports", "9100", "--include-inbound-ports", "8080,8443",
            "--proxy-uid", "2000", "--proxy-gid", "2001",
        ]
        // A bad option is refused before anything is applied.
        for bad in [
            ["--exclude-outbound-cidrs", "10.1.0.0/8"], ["--exclude-inbound-ports", "0"],
            ["--outbound-port", "65536"], ["--proxy-uid", "no-such-user-here"],
        ] {
            let (status, output) = try runProcess([proxy, "capture", "install", "--netns", lab.a] + bad, input: [])
            #expect(status == 64 && output.contains("Error: "), "\(bad): \(output)")
        }
        #expect(try lab.run(in: lab.a, ["nft", "list", "tables"]).isEmpty)

        try NamespaceLab.run([proxy, "capture", "install", "--netns", lab.a] + arguments)
        try NamespaceLab.run([proxy, "capture", "install", "--netns", lab.a] + arguments)
        let tables = try lab.run(in: lab.a, ["nft", "list", "tables"])
        #expect(tables.split(separator: "\n").filter { $0 == "table inet beemesh" }.count == 1, "\(tables)")

        // The foreign checker: what the kernel holds, as nft reads it back.
        var options = CaptureOptions()
        options.captureDNS = true
        options.excludeOutboundPorts = [22, 9000]
        options.excludeOutboundNetworks = [
            try IPNetwork(parsing: "169.254.0.0/16"), try IPNetwork(parsing: "fd00::/8"),
        ]
        options.excludeInboundPorts = [9100]
        options.includeInboundPorts = [8080, 8443]
        options.proxyUID = 2000
        options.proxyGID = 2001
        let expected = CaptureRuleSet(options: options)
        let json = try lab.run(in: lab.a, ["nft", "-j", "list", "ruleset"])
        let listed = try NftListing(json: json)
        #expect(
            listed.chains == [
                "outbound": "output", "inbound": "prerouting", "outbound_filter": "output", "inbound_filter": "input",
            ]
        )
        #expect(listed.rules.map(\.chain) == expected.rules.map(\.chain))
        #expect(listed.rules.map(\.comment) == expected.rules.map(\.comment))
        #expect(listed.rules.map(\.expressions) == expected.rules.map(NftListing.expressions))
        #expect(listed.sets["outbound_excluded_ports"] == ["22", "9000"])
        #expect(listed.sets["outbound_excluded_v4"] == ["169.254.0.0/16"])
        #expect(listed.sets["outbound_excluded_v6"] == ["fd00::/8"])
        #expect(listed.sets["inbound_proxy_ports"] == ["15000", "15008", "15090"])
        #expect(listed.sets["inbound_included_ports"] == ["8080", "8443"])

        let removed = try NamespaceLab.run([proxy, "capture", "remove", "--netns", lab.a])
        #expect(removed.contains("capture removed"))
        let after = try lab.run(in: lab.a, ["nft", "list", "tables"])
        #expect(!after.contains("beemesh"), "\(after)")
        let again = try NamespaceLab.run([proxy, "capture", "remove", "--netns", lab.a])
        #expect(again.contains("no capture table"))
        let (status, show) = try runProcess([proxy, "capture", "show", "--netns", lab.a], input: [])
        #expect(status == 1 && show.contains("no capture table"), "\(show)")
    }
}

/// `nft -j list ruleset`, reduced to comparable strings.
private struct NftListing {
    struct Rule: Equatable {
        var chain: String
        var comment: String
        var expressions: [String]
    }

    var chains: [String: String] = [:]
    var sets: [String: [String]] = [:]
    var rules: [Rule] = []

    init(json: String) throws {
        let root = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        for item in root?["nftables"] as? [[String: Any]] ?? [] {
            if let chain = item["chain"] as? [String: Any], chain["table"] as? String == "beemesh" {
                chains[chain["name"] as? String ?? "?"] = chain["hook"] as? String
            } else if let set = item["set"] as? [String: Any], set["table"] as? String == "beemesh" {
                let elements = (set["elem"] as? [Any] ?? []).map(Self.element)
                sets[set["name"] as? String ?? "?"] = elements
            } else if let rule = item["rule"] as? [String: Any], rule["table"] as? String == "beemesh" {
                rules.append(
                    Rule(
                        chain: rule["chain"] as? String ?? "?",
                        comment: rule["comment"] as? String ?? "",
                        expressions: (rule["expr"] as? [[String: Any]] ?? []).map(Self.expression)
                    )
                )
            }
        }
    }

    private static func element(_ value: Any) -> String {
        if let prefix = (value as? [String: Any])?["prefix"] as? [String: Any] {
            return "\(prefix["addr"] ?? "?")/\(prefix["len"] ?? "?")"
        }
        return "\(value)"
    }

    private static func expression(_ value: [String: Any]) -> String {
        if let match = value["match"] as? [String: Any], let ct = (match["left"] as? [String: Any])?["ct"] {
            return "ct \((ct as? [String: Any])?["key"] ?? "?") \(match["op"] ?? "?") \(match["right"] ?? "?")"
        }
        if let match = value["match"] as? [String: Any] {
            let left = match["left"] as? [String: Any] ?? [:]
            var operand = "?"
            if let meta = left["meta"] as? [String: Any] {
                operand = "meta \(meta["key"] ?? "?")"
            } else if let payload = left["payload"] as? [String: Any] {
                operand = "\(payload["protocol"] ?? "?") \(payload["field"] ?? "?")"
            }
            return "\(operand) \(match["op"] ?? "?") \(match["right"] ?? "?")"
        }
        if value["counter"] != nil { return "counter" }
        if value["return"] != nil { return "return" }
        if value["accept"] != nil { return "accept" }
        if value["drop"] != nil { return "drop" }
        if let redirect = value["redirect"] as? [String: Any] { return "redirect :\(redirect["port"] ?? "?")" }
        return "unknown \(value.keys.sorted())"
    }

    /// The same strings, written from the rule set model (not from what we sent).
    static func expressions(_ rule: CaptureRuleSet.Rule) -> [String] {
        let matches = rule.matches.map { match -> String in
            switch match {
            case .transportProtocol(let proto):
                "meta l4proto == \(proto == .tcp ? "tcp" : proto == .udp ? "udp" : "ipv6-icmp")"
            case .socketUID(let uid): "meta skuid == \(uid)"
            case .socketGID(let gid): "meta skgid == \(gid)"
            case .outputInterface(let name): "meta oifname == \(name)"
            case .inputInterface(let name): "meta iifname == \(name)"
            case .destinationAddress(let set, let family): "\(family == .ipv4 ? "ip" : "ip6") daddr == @\(set)"
            case .destinationPort(let proto, let port): "\(proto == .tcp ? "tcp" : "udp") dport == \(port)"
            case .destinationPortInSet(let set, let negated): "tcp dport \(negated ? "!=" : "==") @\(set)"
            case .establishedOrRelated: #"ct state in ["established", "related"]"#
            case .redirected: "ct status in dnat"
            case .neighbourDiscovery: #"icmpv6 type == ["range": ["nd-router-solicit", "nd-redirect"]]"#
            }
        }
        let action =
            switch rule.action {
            case .return: "return"
            case .redirect(let port): "redirect :\(port)"
            case .accept: "accept"
            case .drop: "drop"
            }
        return matches + ["counter", action]
    }
}
