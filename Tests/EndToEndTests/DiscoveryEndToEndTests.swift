import Foundation
import MeshAPI
import MeshTestSupport
import Testing

/// Discovery end to end: three `beemesh-agent` DHT nodes on the host, two endpoints of
/// `orders.default` in namespace b (each sidecar publishing its signed record through
/// its own agent), and in namespace a an app that knows only the name: `curl
/// http://orders.default.mesh:8080/` goes through captured DNS, mesh DNS, a virtual IP,
/// the outbound capture and a DHT-resolved endpoint, over mTLS. `dig` is the foreign
/// DNS client. Needs root, iproute2, nftables, python3, curl and dig (`tools/setup`).
@Suite(.serialized) struct DiscoveryEndToEndTests {
    static let proxyUser: UInt32 = 1337
    static let recordTTL = 6.0
    static let cacheTTL = 1.0

    private var proxy: String { NamespaceLab.binaries + "/beemesh-proxy" }
    private var beectl: String { NamespaceLab.binaries + "/beectl" }
    private var agent: String { NamespaceLab.binaries + "/beemesh-agent" }

    /// Answers every DNS question with A 192.0.2.7: the upstream resolver of namespace a.
    private static let upstreamScript = """
        import socket, sys
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind((sys.argv[1], int(sys.argv[2])))
        while True:
            query, peer = server.recvfrom(512)
            end = 12
            while query[end] != 0:
                end += query[end] + 1
            question = query[12:end + 5]
            answer = query[:2] + b"\\x81\\x80\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x00" + question
            answer += b"\\xc0\\x0c\\x00\\x01\\x00\\x01\\x00\\x00\\x00\\x3c\\x00\\x04\\xc0\\x00\\x02\\x07"
            server.sendto(answer, peer)
        """

    @Test func curlReachesOrdersByNameAndFailsOverWhenAnEndpointStops() async throws {
        try await blocking { try discovery() }
    }

    private func discovery() throws {
        let lab = try NamespaceLab(subnet: 15)
        defer { lab.tearDown() }
        let directory = lab.directory.path
        try NamespaceLab.run(["chmod", "755", directory])
        try identities(directory)

        // Three agents joined through the first.
        let ports = try (0..<3).map { _ in try freePort() }
        for node in 1...3 {
            try """
            node: {name: node-\(node), ca: \(directory)/node-\(node), stateDirectory: \(directory)/state-\(node)}
            dht:
              listen: 127.0.0.1:\(ports[node - 1])
              bootstrap: [127.0.0.1:\(ports[0])]
              requestTimeout: 1s
            api:
              socket: \(directory)/agent-\(node).sock
              socketGroup: "\(Self.proxyUser)"
              access: [{user: "\(Self.proxyUser)", publish: true}]
            """.write(toFile: "\(directory)/agent-\(node).yaml", atomically: true, encoding: .utf8)
            try lab.start(
                in: nil,
                [agent, "run", "--config", "\(directory)/agent-\(node).yaml"],
                log: "\(directory)/agent-\(node).log"
            )
        }
        try waitUntil("every agent knows both others", timeout: 20) {
            (1...3).allSatisfy { node in
                let peers = try? AdminClient(endpoint: .unix(path: "\(directory)/agent-\(node).sock"))
                    .get("/dht/peers", as: DHTPeers.self)
                return peers?.peers.count == 2
            }
        }

        // Two orders endpoints in b, each behind its own sidecar and agent.
        try writePolicy(directory)
        for number in 1...2 {
            let site = "\(directory)/site-\(number)"
            try FileManager.default.createDirectory(atPath: site, withIntermediateDirectories: true)
            try "orders-\(number)\n".write(toFile: site + "/index.html", atomically: true, encoding: .utf8)
            try lab.start(
                in: lab.b,
                [
                    NamespaceLab.python, "-m", "http.server", "8080", "--bind", "127.0.0.\(number + 1)", "--directory",
                    site,
                ],
                log: "\(directory)/app-\(number).log"
            )
            try """
            identity: {certificate: \(directory)/orders/cert.pem, privateKey: \(directory)/orders/key.pem, \
            trustBundle: \(directory)/orders/bundle.pem}
            inbound: {listen: "\(lab.addressB):\(15007 + number)", ports: [8080], appAddress: 127.0.0.\(number + 1)}
            policies: {directory: \(directory)/policies}
            admin: {listen: off, socket: \(directory)/orders-\(number)/admin.sock}
            metrics: {listen: off}
            discovery:
              agent: \(directory)/agent-\(number + 1).sock
              publish: {service: orders.default, ttl: \(Int(Self.recordTTL))s}
            dns: {listen: off}
            """.write(toFile: "\(directory)/orders-\(number).yaml", atomically: true, encoding: .utf8)
        }
        let ordersOne = try lab.start(
            in: lab.b,
            as: Self.proxyUser,
            [proxy, "run", "--config", "\(directory)/orders-1.yaml"],
            log: "\(directory)/orders-1.log"
        )
        try lab.start(
            in: lab.b,
            as: Self.proxyUser,
            [proxy, "run", "--config", "\(directory)/orders-2.yaml"],
            log: "\(directory)/orders-2.log"
        )

        // The app's namespace: default routes (virtual IPs must be routable to be
        // dialled at all), a resolver address that capture sends to mesh DNS, and an
        // upstream resolver in b for names outside the mesh.
        try NamespaceLab.run(["ip", "-n", lab.a, "route", "add", "default", "via", lab.addressB])
        try NamespaceLab.run(["ip", "-n", lab.a, "-6", "route", "add", "default", "via", lab.addressB6])
        try lab.setResolvConf(in: lab.a, "nameserver \(lab.addressB)\noptions timeout:2 attempts:1\n")
        let upstream = directory + "/upstream.py"
        try Self.upstreamScript.write(toFile: upstream, atomically: true, encoding: .utf8)
        try lab.start(
            in: lab.b,
            [NamespaceLab.python, upstream, lab.addressB, "5353"],
            log: "\(directory)/upstream.log"
        )
        try """
        identity: {certificate: \(directory)/frontend/cert.pem, privateKey: \(directory)/frontend/key.pem, \
        trustBundle: \(directory)/frontend/bundle.pem}
        inbound: {listen: "[::]:15008"}
        capture: {outbound: [127.0.0.1:15001, "[::1]:15001"]}
        policies: {directory: \(directory)/policies}
        admin: {listen: off, socket: \(directory)/frontend/admin.sock}
        metrics: {listen: 127.0.0.1:15090}
        discovery: {agent: \(directory)/agent-1.sock, cacheTTL: \(Int(Self.cacheTTL))s}
        dns: {upstreams: ["\(lab.addressB):5353"]}
        """.write(toFile: "\(directory)/frontend.yaml", atomically: true, encoding: .utf8)
        try NamespaceLab.run([proxy, "capture", "install", "--netns", lab.a])
        try lab.start(
            in: lab.a,
            as: Self.proxyUser,
            [proxy, "run", "--config", "\(directory)/frontend.yaml"],
            log: "\(directory)/frontend.log"
        )
        try lab.waitForListener(in: lab.a, port: 15001)
        try lab.waitForListener(in: lab.b, port: 15009)

        // Both records reach the DHT; any agent finds them.
        try waitUntil("agent 1 finds both orders endpoints", timeout: 20) {
            let lookup = try? AdminClient(endpoint: .unix(path: "\(directory)/agent-1.sock"))
                .get("/dht/services/orders.default", as: ServiceLookup.self)
            return lookup?.endpoints.count == 2
        }
        let table = try NamespaceLab.run([
            beectl, "dht", "lookup", "orders.default", "--agent", "\(directory)/agent-3.sock",
        ])
        #expect(table.contains("\(lab.addressB):15008") && table.contains("\(lab.addressB):15009"), "\(table)")

        // dig, the foreign client: a virtual IP for the mesh name (UDP and TCP), its IPv6
        // twin, NXDOMAIN for an unknown service, and other names forwarded upstream.
        let a = try lab.run(in: lab.a, ["dig", "@127.0.0.1", "-p", "15053", "orders.default.mesh", "A", "+short"])
        #expect(a.hasPrefix("240.240."), "\(a)")
        let tcp = try lab.run(in: lab.a, ["dig", "+tcp", "@127.0.0.1", "-p", "15053", "orders.default.mesh", "+short"])
        #expect(tcp == a, "\(tcp) vs \(a)")
        let aaaa = try lab.run(
            in: lab.a,
            ["dig", "@127.0.0.1", "-p", "15053", "orders.default.mesh", "AAAA", "+short"]
        )
        #expect(aaaa.hasPrefix("fd00:bee::"), "\(aaaa)")
        let unknown = try lab.run(in: lab.a, ["dig", "@127.0.0.1", "-p", "15053", "nosuch.default.mesh"])
        #expect(unknown.contains("status: NXDOMAIN"), "\(unknown)")
        let forwarded = try lab.run(in: lab.a, ["dig", "@127.0.0.1", "-p", "15053", "example.org", "+short"])
        #expect(forwarded.trimmingCharacters(in: .whitespacesAndNewlines) == "192.0.2.7", "\(forwarded)")
        // The app's own resolver (resolv.conf names b; capture brings it to mesh DNS).
        let viaCapture = try lab.run(in: lab.a, ["dig", "orders.default.mesh", "+short"])
        #expect(viaCapture == a, "\(viaCapture)")
        // A malformed query gets FORMERR and is counted; the server goes on.
        let garbage = try lab.run(
            in: lab.a,
            [
                NamespaceLab.python, "-c",
                "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); "
                    + "s.sendto(bytes([0x12, 0x34, 0, 0, 0, 2]) + bytes(10), ('127.0.0.1', 15053)); "
                    + "print(s.recv(512)[3] & 15)",
            ]
        )
        #expect(garbage.trimmingCharacters(in: .whitespacesAndNewlines) == "1", "FORMERR expected: \(garbage)")

        // curl by name: DNS, virtual IP, capture, DHT endpoint, mTLS; both endpoints serve.
        var served: [String] = []
        for _ in 0..<6 {
            let answer = try lab.run(in: lab.a, ["curl", "-sS", "-m", "5", "http://orders.default.mesh:8080/"])
            served.append(answer.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(Set(served) == ["orders-1", "orders-2"], "\(served)")

        let metrics = try lab.run(in: lab.a, ["curl", "-sS", "http://127.0.0.1:15090/metrics"])
        #expect(metrics.contains("beemesh_dns_rejected_total{reason=\"malformed\"} 1"), "\(metrics)")
        #expect(metrics.contains("beemesh_dns_queries_total{result=\"forwarded\"}"), "\(metrics)")

        // One endpoint stops: every request still succeeds, on the other one at once
        // (the unreachable endpoint is skipped), and its record is gone within the TTL:
        // the record it last published expires at most one TTL after the stop.
        let before = try AdminClient(endpoint: .unix(path: "\(directory)/agent-1.sock"))
            .get("/dht/services/orders.default", as: ServiceLookup.self)
        ordersOne.signal(SIGKILL)
        ordersOne.waitUntilExit()
        let stopped = Date()
        let lastExpiry = try #require(before.endpoints.first { $0.endpoint == "\(lab.addressB):15008" }?.expires)
        #expect(lastExpiry.timeIntervalSince(stopped) <= Self.recordTTL, "\(lastExpiry) vs \(stopped)")
        var afterwards: [String] = []
        for _ in 0..<6 {
            let answer = try lab.run(in: lab.a, ["curl", "-sS", "-m", "5", "http://orders.default.mesh:8080/"])
            afterwards.append(answer.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(afterwards.allSatisfy { $0 == "orders-2" }, "\(afterwards)")
        try waitUntil("the stopped endpoint's record expires", timeout: Self.recordTTL + 20) {
            let lookup = try? AdminClient(endpoint: .unix(path: "\(directory)/agent-1.sock"))
                .get("/dht/services/orders.default", as: ServiceLookup.self)
            return lookup?.endpoints.map(\.endpoint) == ["\(lab.addressB):15009"]
        }
        let gone = try AdminClient(endpoint: .unix(path: "\(directory)/agent-1.sock"))
            .get("/dht/services/orders.default", as: ServiceLookup.self)
        #expect(gone.endpoints.map(\.endpoint) == ["\(lab.addressB):15009"], "and it stays gone")

        // The client sidecar's flows name the service it reached by name.
        let flows = try NamespaceLab.run([
            beectl, "flows", "--proxy", "\(directory)/frontend/admin.sock", "-o", "json", "--service", "orders.default",
        ])
        let list = try MeshJSON.decoder().decode(FlowList.self, from: Data(flows.utf8))
        #expect(list.flows.count == 12 && list.flows.allSatisfy { $0.verdict == .allowed }, "\(flows)")
    }

    private func identities(_ directory: String) throws {
        try NamespaceLab.run([beectl, "ca", "init", "--trust-domain", "discovery.test", "--dir", "\(directory)/root"])
        for node in 1...3 {
            try NamespaceLab.run([
                beectl, "ca", "intermediate", "--dir", "\(directory)/root", "--name", "node-\(node)",
                "--out", "\(directory)/node-\(node)",
            ])
        }
        for (name, node) in [("frontend", 1), ("orders", 2)] {
            try NamespaceLab.run([
                beectl, "ca", "issue", "--dir", "\(directory)/root", "--issuer", "\(directory)/node-\(node)",
                "--spiffe-id", "spiffe://discovery.test/ns/default/sa/\(name)", "--out", "\(directory)/\(name)",
            ])
            try NamespaceLab.run(["chown", "-R", "\(Self.proxyUser):\(Self.proxyUser)", "\(directory)/\(name)"])
        }
        for number in 1...2 {
            try FileManager.default.createDirectory(
                atPath: "\(directory)/orders-\(number)",
                withIntermediateDirectories: true
            )
            try NamespaceLab.run(["chown", "\(Self.proxyUser):\(Self.proxyUser)", "\(directory)/orders-\(number)"])
        }
    }

    private func writePolicy(_ directory: String) throws {
        try FileManager.default.createDirectory(atPath: "\(directory)/policies", withIntermediateDirectories: true)
        try """
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: orders, namespace: default}
        spec:
          action: ALLOW
          rules:
            - from: [{identities: ["spiffe://discovery.test/ns/default/sa/frontend"]}]
              to: [{ports: [8080]}]
        """.write(toFile: "\(directory)/policies/orders.yaml", atomically: true, encoding: .utf8)
    }
}
