import Foundation
import Testing

@testable import Policy

/// Every refusal names the file, the line and the field.
@Suite struct PolicyParsingTests {
    static let head = """
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: p, namespace: shop}

        """

    @Test(arguments: [
        ("spec: {action: MAYBE, rules: []}", "p.yaml:4: spec.action: unknown action 'MAYBE'"),
        ("spec: {action: ALLOW}", "p.yaml:4: spec.rules: is required"),
        (
            "spec: {action: ALLOW, rules: [{to: [{ports: [0]}]}]}",
            "p.yaml:4: spec.rules[0].to[0].ports[0]: port must be 1-65535"
        ),
        (
            "spec: {action: ALLOW, rules: [{to: [{ports: [0x50]}]}]}",
            "p.yaml:4: spec.rules[0].to[0].ports[0]: must be a decimal integer"
        ),
        (
            "spec: {action: ALLOW, rules: [{to: [{ports: [+80]}]}]}",
            "p.yaml:4: spec.rules[0].to[0].ports[0]: must be a decimal integer"
        ),
        (
            "spec: {action: DENY, rules: [{from: [{identities: [spiffe://Example.org/ns/a/sa/b]}]}]}",
            "p.yaml:4: spec.rules[0].from[0].identities[0]: 'spiffe://Example.org/ns/a/sa/b': the trust domain may hold only"
        ),
        (
            "spec: {action: ALLOW, rules: [{from: [{identities: [spiffe://x/ns/a*]}]}]}",
            "p.yaml:4: spec.rules[0].from[0].identities[0]: 'spiffe://x/ns/a*'"
        ),
        ("spec: {action: ALLOW, rules: [{from: [{}]}]}", "p.yaml:4: spec.rules[0].from[0]: empty entry"),
        (
            "spec: {action: ALLOW, rules: [{from: [{unauthenticated: true, namespaces: [a]}]}]}",
            "p.yaml:4: spec.rules[0].from[0].unauthenticated: an unauthenticated peer"
        ),
        (
            "spec: {action: ALLOW, rules: [{from: [{unauthenticated: yes}]}]}",
            "p.yaml:4: spec.rules[0].from[0].unauthenticated: must be true or false"
        ),
        (
            "spec: {action: ALLOW, rules: [{to: [{methods: [get]}]}]}",
            "p.yaml:4: spec.rules[0].to[0].methods[0]: 'get' is not an HTTP method"
        ),
        (
            "spec: {action: ALLOW, rules: [{to: [{paths: [api]}]}]}",
            "p.yaml:4: spec.rules[0].to[0].paths[0]: 'api' is not a path"
        ),
        (
            "spec: {action: ALLOW, rules: [{from: [{services: [frontend]}]}]}",
            "p.yaml:4: spec.rules[0].from[0].services[0]: 'frontend' must be <name>.<namespace>"
        ),
        ("spec: {action: ALLOW, rules: [], colour: blue}", "p.yaml:4: spec.colour: unknown field"),
        (
            "spec: {action: ALLOW, rules: [{when: [{header: x, values: []}]}]}",
            "p.yaml:4: spec.rules[0].when[0].values: needs at least one value"
        ),
        (
            "spec:\n  action: ALLOW\n  rules:\n    - to:\n        - ports: [80, 99999]",
            "p.yaml:8: spec.rules[0].to[0].ports[1]: port must be 1-65535"
        ),
    ])
    func errorsNameFileLineAndField(spec: String, expected: String) {
        #expect {
            try MeshPolicy.parse(Self.head + spec, file: "p.yaml")
        } throws: { error in
            let text = "\(error)"
            if !text.hasPrefix(expected) { print("got: \(text)") }
            return text.hasPrefix(expected)
        }
    }

    @Test(arguments: [
        ("apiVersion: v2\nkind: MeshPolicy", "p.yaml:1: apiVersion: must be beemesh.io/v1"),
        ("apiVersion: beemesh.io/v1\nkind: Policy", "p.yaml:2: kind: unknown kind 'Policy'"),
        (
            "apiVersion: beemesh.io/v1\nkind: EgressPolicy\nmetadata: {name: e, namespace: x}\nspec: {action: ALLOW, rules: [{to: [{cidrs: [10.1.0.0/8]}]}]}",
            "p.yaml:4: spec.rules[0].to[0].cidrs[0]: '10.1.0.0/8' has host bits set"
        ),
        (
            "apiVersion: beemesh.io/v1\nkind: EgressPolicy\nmetadata: {name: e, namespace: x}\nspec: {action: ALLOW, rules: [{to: [{}]}]}",
            "p.yaml:4: spec.rules[0].to[0]: empty entry"
        ),
        (
            "apiVersion: beemesh.io/v1\nkind: MeshPolicy\nmetadata: {name: Bad_Name, namespace: x}",
            "p.yaml:3: metadata.name: 'Bad_Name' must be a DNS label"
        ),
        (
            "apiVersion: beemesh.io/v1\nkind: MeshPolicy\nspec: {action: ALLOW, rules: []}",
            "p.yaml:1: metadata: is required"
        ),
        ("apiVersion: [beemesh.io/v1", "p.yaml:"),
    ])
    func documentErrors(text: String, expected: String) {
        #expect {
            try MeshPolicy.parse(text, file: "p.yaml")
        } throws: { error in
            let text = "\(error)"
            if !text.hasPrefix(expected) { print("got: \(text)") }
            return text.hasPrefix(expected)
        }
    }

    @Test func dnsLabels() {
        for good in ["a", "orders-v2", "0a", String(repeating: "x", count: 63)] {
            #expect(MeshPolicy.isDNSLabel(good), "\(good)")
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "ä", "٣", String(repeating: "x", count: 64)] {
            #expect(!MeshPolicy.isDNSLabel(bad), "\(bad)")
        }
    }

    @Test func severalDocumentsAndJSON() throws {
        let yaml =
            Self.head + "spec: {action: ALLOW, rules: []}\n---\n"
            + Self.head.replacingOccurrences(of: "name: p", with: "name: q")
            + "spec: {action: DENY, rules: [{}]}\n"
        #expect(try MeshPolicy.parse(yaml, file: "p.yaml").map(\.reference) == ["shop/p", "shop/q"])
        let json =
            #"{"apiVersion": "beemesh.io/v1", "kind": "MeshPolicy", "metadata": {"name": "j", "namespace": "shop"}, "spec": {"action": "ALLOW", "rules": [{"to": [{"ports": [8080]}]}]}}"#
        let parsed = try MeshPolicy.parse(json, file: "p.json")
        #expect(parsed.first?.rules.first?.to.first?.ports == [8080])
        #expect(throws: LocatedError.self) {
            try MeshPolicy.parse(yaml + "---\n" + Self.head + "spec: {action: ALLOW, rules: []}\n", file: "p.yaml")
        }
    }

    @Test func libraryKeepsTheLastGoodVersionOfAFile() {
        var library = PolicyLibrary()
        let good = Self.head + "spec: {action: ALLOW, rules: [{}]}\n"
        var update = library.update(["a.yaml": .success(good)])
        #expect(update.changed && update.loaded == ["a.yaml"] && library.policies.count == 1)

        update = library.update(["a.yaml": .success(good.replacingOccurrences(of: "ALLOW", with: "ALOW"))])
        #expect(!update.changed && update.rejected.count == 1)
        #expect(library.policies.map(\.reference) == ["shop/p"], "the last good version stays in force")
        #expect(library.errors.first?.file == "a.yaml")

        // A second file defining the same policy is refused, the first one stays.
        update = library.update(["a.yaml": .success(good), "b.yaml": .success(good)])
        #expect(library.policies.count == 1)
        #expect(
            update.rejected.map(\.description) == ["b.yaml:1: metadata: policy shop/p is already defined in a.yaml"]
        )

        update = library.update(["b.yaml": .success(good)])
        #expect(update.removed == ["a.yaml"] && library.policies.count == 1 && library.errors.isEmpty)
        update = library.update([:])
        #expect(update.changed && library.policies.isEmpty)
    }
}

/// The examples shipped in policies/ stay valid.
@Suite struct ShippedPolicyTests {
    @Test func repositoryExamplesLoad() {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        var library = PolicyLibrary()
        let update = library.update(PolicyDirectory.read(root.path + "/policies"))
        #expect(update.rejected.isEmpty, "\(update.rejected)")
        #expect(
            library.policies.map(\.reference).sorted() == [
                "shop/default-deny", "shop/orders", "shop/orders-api-reads", "shop/payments-dry-run",
            ]
        )
        #expect(library.egressPolicies.map(\.reference) == ["shop/payment-provider"])
        let orders = PolicySet(library.policies, for: Workload(namespace: "shop", labels: ["app": "orders"]))
        let frontend = PeerIdentity("spiffe://example.org/ns/shop/sa/frontend")
        #expect(orders.evaluate(PolicyRequest(peer: frontend, port: 8080)).description == "allow by shop/orders#0")
        let retired = PeerIdentity("spiffe://example.org/ns/shop/sa/retired-batch")
        #expect(orders.evaluate(PolicyRequest(peer: retired, port: 8080)).description == "deny by shop/default-deny#0")
    }
}
