import Foundation
import MeshTestSupport
import Testing

/// `beectl policy lint` and `policy check`, as an operator runs them.
@Suite struct BeectlPolicyTests {
    /// `beectl` sits next to the test bundle in the build directory.
    static let beectl = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        .appendingPathComponent("beectl").path
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    @Test func lintPassesTheShippedExamplesAndNamesEveryError() async throws {
        let directory = TemporaryDirectory()
        try """
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: broken, namespace: shop}
        spec:
          action: ALLOW
          rules:
            - to: [{ports: [80, 0]}]
        """.write(toFile: directory.path + "/broken.yaml", atomically: true, encoding: .utf8)
        try "apiVersion: [".write(toFile: directory.path + "/garbled.yml", atomically: true, encoding: .utf8)
        let (good, bad) = try await blocking {
            (
                try runProcess([Self.beectl, "policy", "lint", Self.repository + "/policies"], input: []),
                try runProcess([Self.beectl, "policy", "lint", directory.path], input: [])
            )
        }
        #expect(
            good.status == 0
                && good.output.contains("ok: files 4, mesh policies 4 (rules 5), egress policies 1 (rules 1)"),
            "\(good.output)"
        )
        #expect(bad.status == 1, "\(bad.output)")
        #expect(
            bad.output.contains(
                "\(directory.path)/broken.yaml:7: spec.rules[0].to[0].ports[1]: port must be 1-65535, got 0"
            ),
            "\(bad.output)"
        )
        #expect(bad.output.contains("\(directory.path)/garbled.yml:"), "\(bad.output)")
    }

    @Test func checkNamesTheDecidingRule() async throws {
        let policies = Self.repository + "/policies"
        @Sendable func check(_ arguments: [String]) throws -> (Int32, String) {
            let (status, output) = try runProcess(
                [
                    Self.beectl, "policy", "check", "--dir", policies, "--to-namespace", "shop", "--to-labels",
                    "app=orders",
                ]
                    + arguments,
                input: []
            )
            return (status, output.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let outcomes = try await blocking {
            [
                try check(["--from", "spiffe://example.org/ns/shop/sa/frontend", "--port", "8080"]),
                try check(["--from", "spiffe://example.org/ns/shop/sa/retired-batch", "--port", "8080"]),
                try check(["--from", "unauthenticated", "--port", "8080"]),
                try check([
                    "--from", "spiffe://example.org/ns/shop/sa/frontend", "--port", "8443", "--method", "GET", "--path",
                    "/api/x",
                ]),
                try check([
                    "--from", "spiffe://example.org/ns/shop/sa/frontend", "--port", "8443", "--method", "DELETE",
                    "--path", "/api/x",
                ]),
            ]
        }
        #expect(outcomes[0].0 == 0 && outcomes[0].1 == "allow by shop/orders#0", "\(outcomes[0])")
        #expect(outcomes[1].0 == 1 && outcomes[1].1 == "deny by shop/default-deny#0", "\(outcomes[1])")
        #expect(outcomes[2].0 == 1 && outcomes[2].1 == "deny by default-deny", "\(outcomes[2])")
        #expect(outcomes[3].0 == 0 && outcomes[3].1 == "allow by shop/orders-api-reads#0", "\(outcomes[3])")
        #expect(outcomes[4].0 == 1 && outcomes[4].1 == "deny by default-deny", "\(outcomes[4])")
    }
}
