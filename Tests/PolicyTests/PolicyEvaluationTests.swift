import MeshNet
import MeshTestSupport
import Testing

@testable import Policy

/// Decisions, table by table: what each request gets and which rule says so.
@Suite struct PolicyEvaluationTests {
    static let workload = Workload(namespace: "shop", labels: ["app": "orders", "tier": "api"])

    static let documents = """
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: frontend-reads, namespace: shop}
        spec:
          selector: {matchLabels: {app: orders}}
          action: ALLOW
          rules:
            - from: [{identities: ["spiffe://example.org/ns/shop/sa/frontend"]}]
              to: [{ports: [8080]}]
            - from: [{identities: ["spiffe://example.org/ns/*/sa/monitor"]}]
              to: [{ports: [9090]}]
            - from: [{namespaces: [ops]}]
        ---
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: no-legacy, namespace: shop}
        spec:
          action: DENY
          rules:
            - from: [{identities: ["spiffe://example.org/ns/ops/sa/legacy"]}]
        ---
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: plaintext-health, namespace: shop}
        spec:
          action: ALLOW
          rules:
            - from: [{unauthenticated: true}]
              to: [{ports: [8081]}]
        ---
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: dry-run, namespace: shop}
        spec:
          action: AUDIT
          rules:
            - from: [{services: [frontend.shop]}]
        ---
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: other-app, namespace: shop}
        spec:
          selector: {matchLabels: {app: payments}}
          action: ALLOW
          rules: [{}]
        ---
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: api-http, namespace: shop}
        spec:
          action: ALLOW
          rules:
            - from: [{services: [web.shop]}]
              to: [{ports: [8443], methods: [GET, HEAD], paths: ["/api/*", /healthz]}]
            - from: [{services: [web.shop]}]
              to: [{ports: [8443], methods: [POST], paths: ["/orders/*/items"]}]
              when: [{header: x-env, values: [prod]}]
        ---
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: no-admin, namespace: shop}
        spec:
          action: DENY
          rules:
            - to: [{ports: [8443], paths: ["/admin/*"]}]
        """

    static let set: PolicySet = {
        let policies = try! MeshPolicy.parse(documents, file: "test.yaml")
        return PolicySet(policies, for: workload)
    }()

    static func peer(_ path: String) -> PeerIdentity { PeerIdentity("spiffe://example.org/\(path)")! }

    @Test(arguments: [
        ("ns/shop/sa/frontend", 8080, "allow by shop/frontend-reads#0 (audit: shop/dry-run#0)"),
        ("ns/shop/sa/frontend", 8081, "deny by default-deny (audit: shop/dry-run#0)"),
        ("ns/shop/sa/monitor", 9090, "allow by shop/frontend-reads#1"),
        ("ns/infra/sa/monitor", 9090, "allow by shop/frontend-reads#1"),
        ("ns/infra/sa/monitor", 8080, "deny by default-deny"),
        ("ns/infra/team/sa/monitor", 9090, "deny by default-deny"),
        ("ns/ops/sa/anything", 1234, "allow by shop/frontend-reads#2"),
        ("ns/ops/sa/legacy", 8080, "deny by shop/no-legacy#0"),
        ("ns/billing/sa/frontend", 8080, "deny by default-deny"),
    ])
    func connectionDecisions(peer: String, port: Int, expected: String) {
        let decision = Self.set.evaluate(PolicyRequest(peer: Self.peer(peer), port: UInt16(port)))
        #expect(decision.description == expected)
    }

    @Test func unauthenticatedPeersNeedAnExplicitRule() {
        #expect(
            Self.set.evaluate(PolicyRequest(peer: nil, port: 8081)).description == "allow by shop/plaintext-health#0"
        )
        #expect(Self.set.evaluate(PolicyRequest(peer: nil, port: 8080)).description == "deny by default-deny")
        // An empty `from` admits authenticated peers only: other-app's `rules: [{}]`
        // does not select this workload anyway, and no rule here has an empty from.
        let open = PolicySet(
            [MeshPolicy(name: "all", namespace: "shop", action: .allow, rules: [.init()])],
            for: Self.workload
        )
        #expect(open.evaluate(PolicyRequest(peer: nil, port: 1)).description == "deny by default-deny")
        #expect(
            open.evaluate(PolicyRequest(peer: Self.peer("ns/x/sa/y"), port: 1)).description == "allow by shop/all#0"
        )
    }

    @Test func selectorsPickTheWorkload() {
        #expect(!Self.set.policies.contains { $0.name == "other-app" })
        let payments = PolicySet(
            try! MeshPolicy.parse(Self.documents, file: "t"),
            for: Workload(namespace: "shop", labels: ["app": "payments"])
        )
        #expect(payments.policies.map(\.name).contains("other-app"))
        #expect(!payments.policies.map(\.name).contains("frontend-reads"))
        let elsewhere = PolicySet(try! MeshPolicy.parse(Self.documents, file: "t"), for: Workload(namespace: "bank"))
        #expect(elsewhere.ruleCount == 0)
        #expect(
            elsewhere.evaluate(PolicyRequest(peer: Self.peer("ns/bank/sa/a"), port: 80)).description
                == "deny by default-deny"
        )
    }

    static func http(_ method: String, _ path: String, headers: [(String, String)] = []) -> PolicyRequest.HTTP {
        PolicyRequest.HTTP(method: method, path: Substring(path), host: "orders", headers: headers.map { ($0.0, $0.1) })
    }

    @Test(arguments: [
        ("GET", "/api/orders/1", [], "allow by shop/api-http#0"),
        ("HEAD", "/healthz", [], "allow by shop/api-http#0"),
        ("GET", "/healthz/x", [], "deny by default-deny"),
        ("DELETE", "/api/orders/1", [], "deny by default-deny"),
        ("POST", "/orders/17/items", [("x-env", "prod")], "allow by shop/api-http#1"),
        ("POST", "/orders/17/items", [("x-env", "dev")], "deny by default-deny"),
        ("POST", "/orders/17/x/items", [("x-env", "prod")], "deny by default-deny"),
        ("GET", "/admin/users", [], "deny by shop/no-admin#0"),
    ])
    func requestDecisions(method: String, path: String, headers: [(String, String)], expected: String) {
        let request = PolicyRequest(
            peer: Self.peer("ns/shop/sa/web"),
            port: 8443,
            http: Self.http(method, path, headers: headers)
        )
        #expect(Self.set.evaluate(request).description == expected)
    }

    @Test func httpRulesAtConnectionLevel() {
        // 8443 is an HTTP port (named by HTTP rules): the connection is admitted so that
        // each request can be decided; the DENY on /admin/* waits for the request.
        #expect(Self.set.httpPorts.contains(8443))
        let connect = Self.set.evaluate(PolicyRequest(peer: Self.peer("ns/shop/sa/web"), port: 8443))
        #expect(connect.description == "allow by shop/api-http#0")
        // On an opaque port a DENY that needs a path cannot be checked: it holds.
        let broad = PolicySet(
            [
                MeshPolicy(
                    name: "ops",
                    namespace: "shop",
                    action: .allow,
                    rules: [.init(from: [.init(namespaces: ["ops"])])]
                ),
                MeshPolicy(
                    name: "no-admin",
                    namespace: "shop",
                    action: .deny,
                    rules: [.init(to: [.init(paths: [try! PathPattern(parsing: "/admin/*")])])]
                ),
            ],
            for: Self.workload
        )
        let opaque = broad.evaluate(PolicyRequest(peer: Self.peer("ns/ops/sa/tool"), port: 5432))
        #expect(opaque.description == "deny by shop/no-admin#0")
        // A caller that cannot decide requests gets no HTTP ports: HTTP ALLOW rules
        // admit nothing, HTTP DENY rules hold.
        let connectionOnly = PolicySet(
            try! MeshPolicy.parse(Self.documents, file: "t"),
            for: Self.workload,
            decidesRequests: false
        )
        #expect(connectionOnly.httpPorts.isEmpty)
        let web = PolicyRequest(peer: Self.peer("ns/shop/sa/web"), port: 8443)
        #expect(connectionOnly.evaluate(web).description == "deny by shop/no-admin#0")
    }

    /// Audits found through several index scopes (an exact identity named twice, a
    /// namespace, any peer) come out once each, in load order, as without the index.
    @Test func severalAuditsAreListedOnceInLoadOrder() throws {
        let text = """
            apiVersion: beemesh.io/v1
            kind: MeshPolicy
            metadata: {name: watch-all, namespace: shop}
            spec:
              action: AUDIT
              rules:
                - {}
            ---
            apiVersion: beemesh.io/v1
            kind: MeshPolicy
            metadata: {name: watch-frontend, namespace: shop}
            spec:
              action: AUDIT
              rules:
                - from: [{namespaces: [shop]}]
                - from: [{identities: ["spiffe://example.org/ns/shop/sa/frontend", "spiffe://example.org/ns/shop/sa/frontend"]}]
                  to: [{ports: [8080]}]
            """
        let set = PolicySet(try MeshPolicy.parse(text, file: "audit.yaml"), for: Self.workload)
        let request = PolicyRequest(peer: Self.peer("ns/shop/sa/frontend"), port: 8080)
        let decision = set.evaluate(request)
        #expect(
            decision.description
                == "deny by default-deny (audit: shop/watch-all#0, shop/watch-frontend#0, shop/watch-frontend#1)"
        )
        #expect(decision == set.evaluateWithoutIndex(request))
        let single = set.evaluate(PolicyRequest(peer: Self.peer("ns/ops/sa/x"), port: 8080))
        #expect(single.description == "deny by default-deny (audit: shop/watch-all#0)")
    }

    /// A service account's name may hold dots (`a.b` in `shop` is service `a.b.shop`):
    /// the index must not file the rule under the wrong namespace and skip a DENY.
    @Test func serviceNamesWithDotsAreDecidedAsWithoutTheIndex() throws {
        let text = """
            apiVersion: beemesh.io/v1
            kind: MeshPolicy
            metadata: {name: everyone, namespace: shop}
            spec:
              action: ALLOW
              rules: [{}]
            ---
            apiVersion: beemesh.io/v1
            kind: MeshPolicy
            metadata: {name: no-dotted, namespace: shop}
            spec:
              action: DENY
              rules:
                - from: [{services: [a.b.shop]}]
            """
        let set = PolicySet(try MeshPolicy.parse(text, file: "dots.yaml"), for: Self.workload)
        for (peer, expected) in [
            ("ns/shop/sa/a.b", "deny by shop/no-dotted#0"),
            ("ns/b.shop/sa/a", "deny by shop/no-dotted#0"),
            ("ns/shop/sa/a", "allow by shop/everyone#0"),
            ("ns/b/sa/a.shop", "allow by shop/everyone#0"),
        ] {
            let request = PolicyRequest(peer: Self.peer(peer), port: 8080)
            #expect(set.evaluate(request).description == expected, "\(peer)")
            #expect(set.evaluate(request) == set.evaluateWithoutIndex(request), "\(peer)")
        }
    }

    @Test func patterns() throws {
        let wildcard = try IdentityPattern(parsing: "spiffe://example.org/ns/*/sa/api")
        #expect(wildcard.matches(PeerIdentity("spiffe://example.org/ns/a/sa/api")!))
        #expect(!wildcard.matches(PeerIdentity("spiffe://example.org/ns/a/b/sa/api")!))
        #expect(!wildcard.matches(PeerIdentity("spiffe://other.org/ns/a/sa/api")!))
        #expect(throws: PolicyPatternError.self) { try IdentityPattern(parsing: "spiffe://*/ns/a") }
        #expect(throws: PolicyPatternError.self) { try IdentityPattern(parsing: "spiffe://x/ns/a*") }
        #expect(throws: PolicyPatternError.self) { try IdentityPattern(parsing: "https://x/ns/a") }
        for malformed in [
            "spiffe://x", "spiffe://x/", "spiffe:///ns/a", "spiffe://x/ns//a", "spiffe://x/ns/a/", "spiffe://x/**",
            "spiffe://Example.org/ns/a", "spiffe://x:8080/ns/a", "spiffe://u@x/ns/a", "spiffe://x/ns/a%20b",
            "spiffe://x/ns/./sa", "spiffe://x/ns/../sa", "spiffe://x/ns/a?b", "spiffe://x/ns/é",
        ] {
            #expect(throws: PolicyPatternError.self, "\(malformed)") { try IdentityPattern(parsing: malformed) }
        }
        #expect(throws: Never.self) { try IdentityPattern(parsing: "spiffe://my_td.example-1.org/ns/Team.A/sa/*") }
        let parsed = try IdentityPattern(parsing: "spiffe://example.org/ns/*/sa/api")
        #expect(parsed.trustDomain == "example.org" && parsed.segments == ["ns", "*", "sa", "api"])
        #expect(parsed.description == "spiffe://example.org/ns/*/sa/api" && !parsed.isExact)
        let glob = try PathPattern(parsing: "/v*/orders/*")
        #expect(glob.matches("/v1/orders/7") && glob.matches("/v2/orders/"))
        #expect(!glob.matches("/v1/orders/7/items") && !glob.matches("/v1/x/orders/7"))
        #expect(try PathPattern(parsing: "/api/*").matches("/api/a/b/c"))
        #expect(try !PathPattern(parsing: "/api").matches("/api/"))
        #expect(throws: PolicyPatternError.self) { try PathPattern(parsing: "api/*") }
    }
}

/// The index never changes a decision: on a large generated set, every request gets
/// what a linear scan of all rules gives.
@Suite struct PolicyIndexTests {
    @Test(arguments: [1 as UInt64, 2])
    func indexedDecisionsEqualTheLinearScan(seed: UInt64) {
        var synthetic = SyntheticPolicies(policies: 100, rulesPerPolicy: 10, seed: seed)
        let set = PolicySet(synthetic.policies, for: synthetic.workload)
        var allowed = 0
        for number in 0..<1000 {
            let request = synthetic.nextRequest()
            let indexed = set.evaluate(request)
            let reference = set.evaluateWithoutIndex(request)
            if indexed != reference {
                Issue.record("seed \(seed), request \(number) \(request): \(indexed) vs \(reference)")
                return
            }
            if indexed.isAllowed { allowed += 1 }
        }
        // Both outcomes occur, so the comparison covers allows, denies and audits.
        #expect(allowed > 5 && allowed < 995, "\(allowed) allowed")
    }
}

/// Destinations outside the mesh.
@Suite struct EgressEvaluationTests {
    static let documents = """
        apiVersion: beemesh.io/v1
        kind: EgressPolicy
        metadata: {name: provider, namespace: shop}
        spec:
          selector: {matchLabels: {app: orders}}
          action: ALLOW
          rules:
            - to: [{cidrs: [203.0.113.0/24, "2001:db8::/32"], ports: [443]}]
            - to: [{hosts: [api.example.com]}]
        ---
        apiVersion: beemesh.io/v1
        kind: EgressPolicy
        metadata: {name: no-metadata-service, namespace: shop}
        spec:
          action: DENY
          rules: [{to: [{cidrs: [169.254.169.254/32]}]}]
        ---
        apiVersion: beemesh.io/v1
        kind: EgressPolicy
        metadata: {name: no-bad-host, namespace: shop}
        spec:
          action: DENY
          rules: [{to: [{hosts: [evil.example.com], ports: [25]}]}]
        """

    static func decide(_ host: String, _ port: UInt16, name: String? = nil) throws -> String {
        let documents = try PolicyDocuments.parse(Self.documents, file: "egress.yaml")
        let set = EgressSet(documents.egress, for: Workload(namespace: "shop", labels: ["app": "orders"]))
        let (family, address) = try #require(IPNetwork.parseAddress(host))
        return set.evaluate(EgressRequest(family: family, address: address, port: port, host: name)).description
    }

    @Test func egressDecisions() throws {
        #expect(try Self.decide("203.0.113.9", 443) == "allow by shop/provider#0")
        #expect(try Self.decide("2001:db8::5", 443) == "allow by shop/provider#0")
        #expect(try Self.decide("203.0.113.9", 80) == "deny by default-deny")
        #expect(try Self.decide("198.51.100.1", 443) == "deny by default-deny")
        #expect(try Self.decide("169.254.169.254", 80) == "deny by shop/no-metadata-service#0")
        // A rule about DNS names: allows only when the name is known, denies when it is not.
        #expect(try Self.decide("198.51.100.1", 443, name: "api.example.com") == "allow by shop/provider#1")
        #expect(try Self.decide("198.51.100.1", 443) == "deny by default-deny")
        #expect(try Self.decide("203.0.113.9", 25) == "deny by shop/no-bad-host#0")
        #expect(try Self.decide("203.0.113.9", 25, name: "mail.example.com") == "deny by default-deny")
    }
}
