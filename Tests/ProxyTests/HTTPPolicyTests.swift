import Foundation
import MeshNet
import MeshTestSupport
import NIOCore
import Testing

/// Per-request decisions on an HTTP port, through real sidecars.
@Suite struct HTTPPolicyTests {
    static func policy(port: Int) -> String {
        """
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: orders-reads, namespace: default}
        spec:
          action: ALLOW
          rules:
            - from: [{services: [frontend.default]}]
              to: [{ports: [\(port)], methods: [GET, HEAD], paths: ["/api/*"]}]
        """
    }

    static func ok(_ method: String, _ path: String) -> String {
        let body = "saw \(method) \(path)\n"
        return "HTTP/1.1 200 OK\r\ncontent-length: \(body.utf8.count)\r\n\r\n" + body
    }

    /// A HEAD response: the length of the body a GET would carry, no body.
    static func headOK(_ path: String) -> String {
        "HTTP/1.1 200 OK\r\ncontent-length: \("saw HEAD \(path)\n".utf8.count)\r\n\r\n"
    }

    static let forbidden =
        "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\r\nRBAC: access denied\n"

    static func request(_ method: String, _ path: String, extra: String = "") -> String {
        "\(method) \(path) HTTP/1.1\r\nHost: orders\r\n\(extra)\r\n"
    }

    @Test func onOneKeepAliveConnectionGetIsAllowedAndDeleteGets403() async throws {
        let (_, pair) = try await MeshPair.serving({ TestApp.HTTPResponder() }, policies: Self.policy(port:))
        let port = pair.routePort()
        let outcome = try await blocking { () throws -> [String] in
            let socket = try BlockingSocket(port: port)
            var seen: [String] = []
            func exchange(_ request: String, expect: String) throws {
                try socket.send(request)
                seen.append(String(decoding: try socket.receive(exactly: expect.utf8.count), as: UTF8.self))
            }
            try exchange(Self.request("GET", "/api/orders/1"), expect: Self.ok("GET", "/api/orders/1"))
            try exchange(Self.request("DELETE", "/api/orders/1"), expect: Self.forbidden)
            try exchange(Self.request("GET", "/api/orders/2"), expect: Self.ok("GET", "/api/orders/2"))
            try exchange(Self.request("GET", "/admin"), expect: Self.forbidden)
            // Pipelined: each 403 lands between the responses of its neighbours.
            let pipelined =
                Self.request("GET", "/api/a") + Self.request("DELETE", "/api/a") + Self.request("HEAD", "/api/b")
                + Self.request("POST", "/api/c", extra: "Content-Length: 4\r\n") + "body"
                + Self.request("GET", "/api/d")
            let expected =
                Self.ok("GET", "/api/a") + Self.forbidden + Self.headOK("/api/b")
                + Self.forbidden + Self.ok("GET", "/api/d")
            try socket.send(pipelined)
            seen.append(String(decoding: try socket.receive(exactly: expected.utf8.count), as: UTF8.self))
            return seen
        }
        #expect(outcome.count == 5)
        #expect(outcome[0] == Self.ok("GET", "/api/orders/1"))
        #expect(outcome[1] == Self.forbidden)
        #expect(outcome[2] == Self.ok("GET", "/api/orders/2"))
        #expect(outcome[3] == Self.forbidden)
        #expect(
            outcome[4]
                == Self.ok("GET", "/api/a") + Self.forbidden + Self.headOK("/api/b")
                + Self.forbidden + Self.ok("GET", "/api/d")
        )
    }

    @Test func aRequestThatCannotBeFramedGets400AndNeverReachesTheApp() async throws {
        let (_, pair) = try await MeshPair.serving({ TestApp.HTTPResponder() }, policies: Self.policy(port:))
        let port = pair.routePort()
        let answer = try await blocking { () throws -> String in
            let socket = try BlockingSocket(port: port)
            try socket.send(Self.request("GET", "/api/x", extra: "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"))
            return String(decoding: try socket.receiveAll(), as: UTF8.self)
        }
        #expect(answer.hasPrefix("HTTP/1.1 400 Bad Request\r\n") && answer.contains("connection: close"), "\(answer)")
        #expect(!answer.contains("saw"))
    }

    /// Finding 2 of the node security review (c7e302b): a path rule is decided on the
    /// normalized target, and the app receives that target, whatever it would have
    /// made of the raw one.
    static func paths(allow: [String], deny: [String]) -> (Int) -> String {
        { port in
            var text = """
                apiVersion: beemesh.io/v1
                kind: MeshPolicy
                metadata: {name: public, namespace: default}
                spec:
                  action: ALLOW
                  rules: [{from: [{services: [frontend.default]}], to: [{ports: [\(port)], paths: \(allow)}]}]
                """
            if !deny.isEmpty {
                text += """

                    ---
                    apiVersion: beemesh.io/v1
                    kind: MeshPolicy
                    metadata: {name: no-cgi, namespace: default}
                    spec:
                      action: DENY
                      rules: [{to: [{ports: [\(port)], paths: \(deny)}]}]
                    """
            }
            return text
        }
    }

    /// One request per connection; the whole answer.
    static func ask(_ port: Int, _ target: String) throws -> String {
        let socket = try BlockingSocket(port: port)
        try socket.send("GET \(target) HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
        socket.shutdownWrite()
        return String(decoding: try socket.receiveAll(), as: UTF8.self)
    }

    @Test func pathRulesDecideTheNormalizedTargetAndTheAppReceivesIt() async throws {
        let (_, allowPublic) = try await MeshPair.serving(
            { TestApp.HTTPResponder() },
            policies: Self.paths(allow: ["/public/*"], deny: [])
        )
        let (_, denyCGI) = try await MeshPair.serving(
            { TestApp.HTTPResponder() },
            policies: Self.paths(allow: ["/*"], deny: ["/cgi-bin/hello"])
        )
        let (publicPort, cgiPort) = (allowPublic.routePort(), denyCGI.routePort())
        let answers = try await blocking { () throws -> [String: String] in
            var answers: [String: String] = [:]
            for target in ["/public/../cgi-bin/hello", "/public/%2e%2e/cgi-bin/hello", "/public/./a//b", "/%70ublic/x"]
            {
                answers["allow " + target] = try Self.ask(publicPort, target)
            }
            answers["allow /public/a%2fb"] = try Self.ask(publicPort, "/public/a%2fb")
            for target in [
                "/cgi-bin/hello", "/cgi-bin//hello", "/cgi-bin/./hello", "/%63gi-bin/hello", "/x/../cgi-bin/hello",
                "/cgi-bin/other",
            ] {
                answers["deny " + target] = try Self.ask(cgiPort, target)
            }
            return answers
        }
        for denied in [
            "allow /public/../cgi-bin/hello", "allow /public/%2e%2e/cgi-bin/hello", "deny /cgi-bin/hello",
            "deny /cgi-bin//hello", "deny /cgi-bin/./hello", "deny /%63gi-bin/hello", "deny /x/../cgi-bin/hello",
        ] {
            #expect(answers[denied]?.hasPrefix("HTTP/1.1 403 Forbidden") == true, "\(denied): \(answers[denied] ?? "")")
        }
        #expect(answers["allow /public/./a//b"]?.hasSuffix("saw GET /public/a/b\n") == true)
        #expect(answers["allow /%70ublic/x"]?.hasSuffix("saw GET /public/x\n") == true)
        #expect(answers["deny /cgi-bin/other"]?.hasSuffix("saw GET /cgi-bin/other\n") == true)
        let refused = answers["allow /public/a%2fb"] ?? ""
        #expect(refused.hasPrefix("HTTP/1.1 400 Bad Request") && !refused.contains("saw"), "\(refused)")
    }

    /// Python's http.server decodes every escape, `%2F` included, before it resolves
    /// `..`: a server that would turn `/public/..%2Fsecret.txt` into `/secret.txt`.
    /// Such a target never reaches it; what does reach it is what policy decided.
    @Test func aServerThatDecodesEverythingGetsOnlyWhatPolicyDecided() async throws {
        let site = TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: site.path + "/public", withIntermediateDirectories: true)
        try "public\n".write(toFile: site.path + "/public/ok.txt", atomically: true, encoding: .utf8)
        try "secret\n".write(toFile: site.path + "/secret.txt", atomically: true, encoding: .utf8)
        let port = try freePort()
        let server = try ChildProcess.start([
            "/usr/bin/python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", site.path, "\(port)",
        ])
        defer {
            server.signal(SIGKILL)
            server.waitUntilExit()
        }
        try await waitUntil("python3 -m http.server answers") { (try? BlockingSocket(port: port)) != nil }
        let pair = try await MeshPair(
            routes: [("orders.default", port)],
            allowedPorts: [port],
            policies: Self.paths(allow: ["/public/*"], deny: [])(port)
        )
        let routePort = pair.routePort()
        let answers = try await blocking { () throws -> [String] in
            try ["/public/..%2Fsecret.txt", "/public/../secret.txt", "/public//ok.txt", "/public/%2E%2E/secret.txt"].map
            {
                try Self.ask(routePort, $0)
            }
        }
        #expect(answers[0].hasPrefix("HTTP/1.1 400") && !answers[0].contains("secret"), "\(answers[0])")
        #expect(answers[1].hasPrefix("HTTP/1.1 403") && !answers[1].contains("secret"), "\(answers[1])")
        #expect(answers[2].hasPrefix("HTTP/1.0 200") && answers[2].hasSuffix("public\n"), "\(answers[2])")
        #expect(answers[3].hasPrefix("HTTP/1.1 403") && !answers[3].contains("secret"), "\(answers[3])")
    }
}
