import Foundation
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
}
