import Foundation
import MeshAPI
import MeshNet
import MeshTestSupport
import NIOCore
import Testing

/// Real traffic through a pair of sidecars, read back as an operator would: through
/// `beectl flows -o json`, through `beectl flows --follow` while the traffic runs, with
/// curl on the admin socket, and the metrics page through the Prometheus text parser of
/// the `prometheus_client` Python package.
@Suite struct FlowsTests {
    static let beectl = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("beectl").path

    /// GET /api/* on the HTTP port, anything on the TCP port, nothing on the third.
    static func policies(http: Int, tcp: Int) -> String {
        """
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: orders-http, namespace: default}
        spec:
          action: ALLOW
          rules:
            - from: [{services: [frontend.default]}]
              to: [{ports: [\(http)], methods: [GET], paths: ["/api/*"]}]
        ---
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: orders-tcp, namespace: default}
        spec:
          action: ALLOW
          rules: [{from: [{services: [frontend.default]}], to: [{ports: [\(tcp)]}]}]
        """
    }

    struct Traffic {
        let pair: MeshPair
        let httpPort: Int
        let tcpPort: Int
        let deniedPort: Int
    }

    /// The pair and its three apps: HTTP, TCP echo, and an echo no policy admits.
    static func start() async throws -> Traffic {
        let http = try await TestApp.start { TestApp.HTTPResponder() }
        let tcp = try await TestApp.start { TestApp.Echo() }
        let denied = try await TestApp.start { TestApp.Echo() }
        let ports = [http, tcp, denied].map { $0.localAddress!.port! }
        let pair = try await MeshPair(
            routes: ports.map { ("orders.default", $0) },
            allowedPorts: ports,
            policies: policies(http: ports[0], tcp: ports[1])
        )
        return Traffic(pair: pair, httpPort: ports[0], tcpPort: ports[1], deniedPort: ports[2])
    }

    /// Allowed HTTP (200, 404, 403 on one connection), an allowed TCP flow, a denied one,
    /// and a TCP flow revoked by a policy dropped in while it is open.
    static func run(_ traffic: Traffic) async throws {
        let pair = traffic.pair
        let (httpRoute, tcpRoute, deniedRoute) = (pair.routePort(0), pair.routePort(1), pair.routePort(2))
        let directory = pair.policyDirectory
        let server = pair.server
        try await blocking {
            let http = try BlockingSocket(port: httpRoute)
            for (method, path, status) in [
                ("GET", "/api/orders?session=s3cret", "200"), ("GET", "/api/missing", "404"),
                ("DELETE", "/api/orders", "403"),
            ] {
                try http.send("\(method) \(path) HTTP/1.1\r\nHost: orders\r\n\r\n")
                let head = try http.receiveResponseHead()
                guard head.hasPrefix("HTTP/1.1 \(status)") else { throw SocketError("\(method) \(path): \(head)") }
            }
            shutdown(http.fd, Int32(SHUT_RDWR))

            let tcp = try BlockingSocket(port: tcpRoute)
            guard try tcp.roundTrip("hello;") == "hello;" else { throw SocketError("no echo") }
            shutdown(tcp.fd, Int32(SHUT_RDWR))

            let denied = try BlockingSocket(port: deniedRoute)
            try? denied.send("anyone?")
            _ = try? denied.receiveAll()

            // Only the flow about to be revoked is open when the deny arrives.
            let deadline = Date().addingTimeInterval(5)
            while server.openFlowCount > 0, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            let revoked = try BlockingSocket(port: tcpRoute)
            guard try revoked.roundTrip("before;") == "before;" else { throw SocketError("no echo") }
            try PolicyReloadTests.dropIn(PolicyReloadTests.denyFrontend, as: "50-deny.yaml", in: directory)
            _ = try? revoked.receiveAll()  // the revocation closes it
        }
    }

    @Test func realTrafficReadsBackThroughBeectlJSONAndFollow() async throws {
        let traffic = try await Self.start()
        let pair = traffic.pair
        let (server, client) = (pair.server, pair.client)
        let output = TemporaryDirectory()
        let followFile = output.path + "/follow.ndjson"
        #expect(FileManager.default.createFile(atPath: followFile, contents: nil))
        let follower = try ChildProcess.start(
            [Self.beectl, "flows", "--proxy", pair.serverAdminSocket, "--follow", "-o", "json"],
            output: .file(followFile)
        )
        defer { if follower.isRunning { follower.terminate() } }
        try await waitUntil("beectl follows the server's flows") { server.flowFollowers == 1 }

        try await Self.run(traffic)
        try await waitUntil("every flow ended") { server.openFlowCount == 0 && client.openFlowCount == 0 }

        // The table, as JSON.
        let listed = try runProcess([Self.beectl, "flows", "--proxy", pair.serverAdminSocket, "-o", "json"], input: [])
        #expect(listed.status == 0, "\(listed.output)")
        let list = try MeshJSON.decoder().decode(FlowList.self, from: Data(listed.output.utf8))
        let flows = list.flows
        #expect(flows.count == 4, "\(flows.map { "\($0.destination.port) \($0.verdict)" })")
        #expect(list.evicted == 0 && list.recording)
        #expect(flows.allSatisfy { $0.direction == .inbound && $0.end != nil })
        #expect(flows.allSatisfy { $0.source.identity == "spiffe://example.org/ns/default/sa/frontend" })
        #expect(flows.allSatisfy { $0.destination.identity == "spiffe://example.org/ns/default/sa/orders" })
        #expect(flows.allSatisfy { $0.tls?.version == "TLSv1.3" && $0.destination.service == "orders.default" })

        let http = try #require(flows.first { $0.destination.port == UInt16(traffic.httpPort) })
        #expect(http.protocol == "http" && http.verdict == .allowed && http.closeReason == .done)
        #expect(http.http.map(\.method) == ["GET", "GET", "DELETE"] && http.requests == 3)
        // Finding 12 of the node security review: the query (a session token here) is
        // not recorded unless flows.recordQuery asks for it.
        #expect(http.http.map(\.path) == ["/api/orders", "/api/missing", "/api/orders"])
        #expect(!String(decoding: try MeshJSON.encoder().encode(flows), as: UTF8.self).contains("s3cret"))
        #expect(http.http.map(\.status) == [200, 404, 403])
        #expect(http.http.map(\.verdict) == [.allowed, .allowed, .denied])
        #expect(http.http.map(\.policy) == ["default/orders-http", "default/orders-http", "default-deny"])
        #expect(http.http.allSatisfy { $0.authority == "orders" && $0.latency != nil })

        let tcpFlows = flows.filter { $0.destination.port == UInt16(traffic.tcpPort) }
        #expect(tcpFlows.count == 2)
        let allowed = try #require(tcpFlows.first)
        #expect(allowed.verdict == .allowed && allowed.policy == "default/orders-tcp" && allowed.rule == 0)
        #expect(allowed.protocol == "tcp" && allowed.http.isEmpty && allowed.closeReason == .done)
        #expect(allowed.bytesIn == 6 && allowed.bytesOut == 6)
        let revoked = try #require(tcpFlows.last)
        #expect(
            revoked.verdict == .revoked && revoked.policy == "default/no-frontend" && revoked.closeReason == .revoked
        )
        #expect(revoked.bytesIn == 7 && revoked.bytesOut == 7)

        let denied = try #require(flows.first { $0.destination.port == UInt16(traffic.deniedPort) })
        #expect(denied.verdict == .denied && denied.policy == "default-deny" && denied.reason == "policy_denied")
        #expect(denied.bytesIn == 0 && denied.bytesOut == 0)

        // The client sidecar saw the same four from its side.
        let clientList = try runProcess(
            [Self.beectl, "flows", "--proxy", pair.clientAdminSocket, "-o", "json"],
            input: []
        )
        let outbound = try MeshJSON.decoder().decode(FlowList.self, from: Data(clientList.output.utf8)).flows
        #expect(outbound.count == 4 && outbound.allSatisfy { $0.direction == .outbound })
        #expect(outbound.first { $0.destination.port == UInt16(traffic.deniedPort) }?.reason == "policy_denied")
        #expect(outbound.filter { $0.verdict == .allowed }.count == 3)

        // Filters on the command line reach the server.
        let onlyDenied = try runProcess(
            [Self.beectl, "flows", "--proxy", pair.serverAdminSocket, "--verdict", "denied", "-o", "json"],
            input: []
        )
        #expect(
            try MeshJSON.decoder().decode(FlowList.self, from: Data(onlyDenied.output.utf8)).flows.map(\.id) == [
                denied.id
            ]
        )
        let notFound = try runProcess(
            [Self.beectl, "flows", "--proxy", pair.serverAdminSocket, "--http-status", "404", "-o", "json"],
            input: []
        )
        #expect(
            try MeshJSON.decoder().decode(FlowList.self, from: Data(notFound.output.utf8)).flows.map(\.id) == [http.id]
        )

        // The follow stream saw it happen.
        try await waitUntil("the follow stream caught up") {
            Self.events(followFile).filter { if case .flowEnd = $0 { true } else { false } }.count >= 4
        }
        follower.terminate()
        let events = Self.events(followFile)
        let starts = events.compactMap { if case .flowStart(let flow) = $0 { flow.id } else { nil } }
        let requests = events.compactMap { if case .httpRequest(_, let request) = $0 { request.status } else { nil } }
        let ends = events.compactMap { if case .flowEnd(let flow) = $0 { flow } else { nil } }
        #expect(Set(starts) == [http.id, allowed.id, revoked.id], "a flow starts once it is admitted")
        #expect(requests == [200, 404, 403])
        #expect(ends.count == 4)
        #expect(Set(ends.map(\.id)) == Set(flows.map(\.id)))
        #expect(ends.first { $0.id == revoked.id }?.verdict == .revoked)
        #expect(!events.contains { if case .overrun = $0 { true } else { false } })

        // The table itself, as an operator sees it.
        let table = try runProcess([Self.beectl, "flows", "--proxy", pair.serverAdminSocket], input: [])
        let lines = table.output.split(separator: "\n")
        #expect(lines.first?.hasPrefix("TIME") == true && lines.count == 5, "\(table.output)")
        #expect(table.output.contains("DELETE /api/orders 403 (+2)") || table.output.contains("GET"), "\(table.output)")
        #expect(table.output.contains("revoked") && !table.output.contains("\u{1B}["), "no colour off a terminal")
        await pair.shutdown()
    }

    @Test func curlReadsTheAdminSocketAndPrometheusParsesTheMetrics() async throws {
        let traffic = try await Self.start()
        let pair = traffic.pair
        let server = pair.server
        try await Self.run(traffic)
        try await waitUntil("every flow ended") { server.openFlowCount == 0 }

        let socket = pair.serverAdminSocket
        func curl(_ path: String) throws -> (status: Int32, output: String) {
            try runProcess(
                ["curl", "-sS", "--fail-with-body", "--unix-socket", socket, "http://localhost\(path)"],
                input: []
            )
        }
        #expect(try curl("/live").output.contains("\"live\""))
        #expect(try curl("/ready").output.contains("\"ready\""))
        let identity = try MeshJSON.decoder().decode(IdentityStatus.self, from: Data(try curl("/identity").output.utf8))
        #expect(identity.spiffeID == "spiffe://example.org/ns/default/sa/orders")
        #expect(identity.secondsUntilExpiry > 3600)
        let config = try curl("/config").output
        #expect(config.contains("\"privateKey\"") && !config.contains("PRIVATE KEY"), "paths, never key material")
        let policies = try MeshJSON.decoder().decode(PolicyStatus.self, from: Data(try curl("/policies").output.utf8))
        #expect(
            Set(policies.policies.map(\.name)) == ["default/orders-http", "default/orders-tcp", "default/no-frontend"]
        )
        #expect(policies.httpPorts == [UInt16(traffic.httpPort)])
        let flows = try MeshJSON.decoder().decode(
            FlowList.self,
            from: Data(try curl("/flows?verdict=revoked").output.utf8)
        )
        #expect(flows.flows.count == 1)
        let bad = try curl("/flows?verdict=maybe")
        #expect(bad.status != 0 && bad.output.contains("verdict: 'maybe' is not one of"))
        #expect(try curl("/nowhere").output.contains("no such endpoint"))
        let usage = try runProcess([Self.beectl, "flows", "--proxy", socket, "--verdict", "maybe"], input: [])
        #expect(usage.status == 64 && usage.output.contains("--verdict: 'maybe' is not one of"), "\(usage.output)")
        let nowhere = try runProcess([Self.beectl, "flows", "--proxy", socket + ".missing"], input: [])
        #expect(nowhere.status == 2 && nowhere.output.contains("cannot reach the admin API"), "\(nowhere.output)")

        // The metrics page, through the reference parser.
        let metricsPort = try #require(pair.serverAddresses.metrics?.port)
        let page = try runProcess(["curl", "-sS", "--fail", "http://127.0.0.1:\(metricsPort)/metrics"], input: [])
        #expect(page.status == 0)
        let parser = """
            import sys
            from prometheus_client.parser import text_string_to_metric_families
            for family in text_string_to_metric_families(sys.stdin.read()):
                for sample in family.samples:
                    labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                    print(f"{sample.name}|{labels}|{sample.value}")
            """
        let parsed = try runProcess(["python3", "-c", parser], input: Array(page.output.utf8))
        #expect(parsed.status == 0, "prometheus_client refused the page: \(parsed.output)")
        let samples = parsed.output.split(separator: "\n").map {
            $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
        }
        func value(_ name: String, _ labels: String) -> Double? {
            samples.first { $0.count == 3 && $0[0] == name && $0[1] == labels }.flatMap { Double($0[2]) }
        }
        // The registry is shared by every sidecar of this test process: at least ours.
        #expect((value("beemesh_connections_total", "direction=inbound,verdict=revoked") ?? 0) >= 1)
        #expect((value("beemesh_connections_total", "direction=inbound,verdict=denied") ?? 0) >= 1)
        #expect((value("beemesh_http_requests_total", "direction=inbound,status_class=4xx") ?? 0) >= 2)
        #expect((value("beemesh_http_request_duration_seconds_count", "direction=inbound") ?? 0) >= 3)
        #expect((value("beemesh_certificate_expiry_seconds", "") ?? 0) > 3600)
        #expect(value("beemesh_flow_table_capacity", "") == 4096)
        #expect(samples.contains { $0[0] == "beemesh_active_flows" })
        #expect(samples.contains { $0[0] == "beemesh_received_bytes_total" })
        #expect(samples.contains { $0[0] == "beemesh_policy_decisions_total" })
        #expect(samples.allSatisfy { $0[0].hasPrefix("beemesh_") }, "every metric is under beemesh_")
        let metricsOnly = try runProcess(["curl", "-s", "http://127.0.0.1:\(metricsPort)/flows"], input: [])
        #expect(metricsOnly.output.contains("serves /metrics only"))
        await pair.shutdown()
    }

    /// The events in an NDJSON file so far (a partial last line is left for later).
    static func events(_ path: String) -> [FlowEvent] {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap {
            try? MeshJSON.decoder().decode(FlowEvent.self, from: Data($0.utf8))
        }
    }
}

extension BlockingSocket {
    /// Reads one HTTP response with a `content-length` body; returns its head.
    func receiveResponseHead() throws -> String {
        var head: [UInt8] = []
        while !head.ends(with: Array("\r\n\r\n".utf8)) {
            let byte = try receive(exactly: 1)
            guard let first = byte.first else { throw SocketError("connection closed in a response head") }
            head.append(first)
        }
        let text = String(decoding: head, as: UTF8.self)
        let length =
            text.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
            .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
        _ = try receive(exactly: length)
        return text
    }
}

extension Array where Element: Equatable {
    fileprivate func ends(with suffix: [Element]) -> Bool {
        count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix
    }
}
