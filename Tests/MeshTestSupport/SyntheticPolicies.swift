import Policy

/// A reproducible policy set of any size, for the benchmark and the index property
/// test: `policies` documents in namespace `bench`, `rulesPerPolicy` rules each, with
/// exact and wildcard identities, namespaces, ports and every action; and requests
/// drawn from the same population of peers and ports.
public struct SyntheticPolicies {
    public let policies: [MeshPolicy]
    public let workload = Workload(namespace: "bench", labels: ["app": "bench"])
    private let identities: [String]
    private let ports: [UInt16]

    /// `seed` drives a SplitMix64 sequence: the same seed gives the same set.
    public init(policies count: Int, rulesPerPolicy: Int, seed: UInt64) {
        var state = seed
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        let namespaces = (0..<50).map { "team-\($0)" }
        let identities = (0..<2000).map { "spiffe://bench.local/ns/\(namespaces[$0 % 50])/sa/svc-\($0)" }
        let ports = (0..<200).map { UInt16(8000 + $0) }
        var policies: [MeshPolicy] = []
        for number in 0..<count {
            let roll = next() % 100
            let action: MeshPolicy.Action = roll < 80 ? .allow : roll < 95 ? .deny : .audit
            var rules: [MeshPolicy.Rule] = []
            for _ in 0..<rulesPerPolicy {
                let kind = next() % 10
                var peer = MeshPolicy.Peer()
                if kind < 7 {
                    let count = 1 + Int(next() % 3)
                    peer.identities = (0..<count).map { _ in
                        try! IdentityPattern(parsing: identities[Int(next() % UInt64(identities.count))])
                    }
                } else if kind < 8 {
                    let team = namespaces[Int(next() % UInt64(namespaces.count))]
                    peer.identities = [try! IdentityPattern(parsing: "spiffe://bench.local/ns/\(team)/sa/*")]
                } else if kind < 9 {
                    let service = Int(next() % UInt64(identities.count))
                    peer.identities = [try! IdentityPattern(parsing: "spiffe://bench.local/ns/*/sa/svc-\(service)")]
                } else {
                    peer.namespaces = [namespaces[Int(next() % UInt64(namespaces.count))]]
                }
                let port = ports[Int(next() % UInt64(ports.count))]
                rules.append(MeshPolicy.Rule(from: [peer], to: [MeshPolicy.Destination(ports: [port])]))
            }
            policies.append(
                MeshPolicy(
                    name: "policy-\(number)",
                    namespace: "bench",
                    selector: next() % 2 == 0 ? ["app": "bench"] : [:],
                    action: action,
                    rules: rules
                )
            )
        }
        self.policies = policies
        self.identities = identities
        self.ports = ports
        requestState = seed ^ 0x5555
    }

    private var requestState: UInt64

    /// The next request: a known peer (one in 50 unauthenticated) and a used port.
    public mutating func nextRequest() -> PolicyRequest {
        requestState &+= 0x9E37_79B9_7F4A_7C15
        var z = requestState
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        let peer = z % 50 == 0 ? nil : PeerIdentity(identities[Int(z % UInt64(identities.count))])
        return PolicyRequest(peer: peer, port: ports[Int((z >> 20) % UInt64(ports.count))])
    }

    /// The set as YAML files (`policiesPerFile` documents each), for reload timing.
    public func yamlFiles(policiesPerFile: Int) -> [String: String] {
        var files: [String: String] = [:]
        for start in stride(from: 0, to: policies.count, by: policiesPerFile) {
            let documents = policies[start..<min(start + policiesPerFile, policies.count)].map(Self.yaml)
            let number = String(start)
            let name = "policies-" + String(repeating: "0", count: max(0, 5 - number.count)) + number + ".yaml"
            files[name] = documents.joined(separator: "---\n")
        }
        return files
    }

    static func yaml(_ policy: MeshPolicy) -> String {
        var text = """
            apiVersion: beemesh.io/v1
            kind: MeshPolicy
            metadata: {name: \(policy.name), namespace: \(policy.namespace)}
            spec:
              action: \(policy.action.rawValue)

            """
        if !policy.selector.isEmpty {
            text +=
                "  selector: {matchLabels: {\(policy.selector.map { "\($0.key): \($0.value)" }.joined(separator: ", "))}}\n"
        }
        text += "  rules:\n"
        for rule in policy.rules {
            let peer = rule.from[0]
            let from =
                peer.identities.isEmpty
                ? "namespaces: [\(peer.namespaces.joined(separator: ", "))]"
                : "identities: [\(peer.identities.map { "\"\($0)\"" }.joined(separator: ", "))]"
            text +=
                "    - from: [{\(from)}]\n      to: [{ports: [\(rule.to[0].ports.map(String.init).joined(separator: ", "))]}]\n"
        }
        return text
    }
}
