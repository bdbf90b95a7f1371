/// The policies that apply to one workload, compiled for fast decisions.
///
/// Evaluation: a matching DENY rule denies; otherwise a matching ALLOW rule allows;
/// otherwise the request is denied (`default-deny`). AUDIT rules that match are
/// reported alongside and change nothing. When several rules match, the first in load
/// order (files by name, documents and rules in file order) is named.
///
/// Rules are indexed by port and, when every peer they admit is an exact SPIFFE ID, by
/// identity, so a decision looks only at rules that could match: with 10,000 rules a
/// decision touches a handful (see `tools/bench policy`).
///
/// Rules that look at HTTP requests (methods, paths, hosts, headers) are decided per
/// request on HTTP ports. At connection level, and on ports that carry opaque TCP,
/// they cannot be checked: an ALLOW rule that needs HTTP then allows nothing, and a
/// DENY rule that needs HTTP denies on opaque ports (fail closed); on HTTP ports the
/// connection is admitted so that each request can be decided.
public struct PolicySet: Sendable {
    struct CompiledRule: Sendable {
        let match: PolicyDecision.Match
        let action: MeshPolicy.Action
        let rule: MeshPolicy.Rule
        let needsHTTP: Bool
    }

    /// Candidate rule indices per action.
    struct Index: Sendable {
        var exact: [ExactKey: [Int]] = [:]
        var byPort: [UInt16: [Int]] = [:]
        var anyPort: [Int] = []
    }

    struct ExactKey: Hashable, Sendable {
        var identity: String
        /// 0: any port.
        var port: UInt16
    }

    private let rules: [CompiledRule]
    private let indices: [MeshPolicy.Action: Index]
    /// Ports whose connections are parsed as HTTP/1.1 and decided per request.
    public let httpPorts: Set<UInt16>
    /// The policies that select this workload, in load order.
    public let policies: [MeshPolicy]

    /// `httpPorts` adds ports that configuration marks as HTTP to those that HTTP rules
    /// name. A caller that cannot decide HTTP requests one by one passes
    /// `decidesRequests: false`: then no port is an HTTP port, so a rule that needs a
    /// request never allows and always denies (fail closed).
    public init(
        _ all: [MeshPolicy],
        for workload: Workload,
        httpPorts extraHTTPPorts: Set<UInt16> = [],
        decidesRequests: Bool = true
    ) {
        policies = all.filter { $0.selects(workload) }
        var rules: [CompiledRule] = []
        var indices: [MeshPolicy.Action: Index] = [:]
        var httpPorts = extraHTTPPorts
        for policy in policies {
            for (number, rule) in policy.rules.enumerated() {
                let index = rules.count
                let needsHTTP = rule.needsHTTP
                rules.append(
                    CompiledRule(
                        match: .init(policy: policy.reference, rule: number),
                        action: policy.action,
                        rule: rule,
                        needsHTTP: needsHTTP
                    )
                )
                let ports: [UInt16]? =
                    rule.to.isEmpty || rule.to.contains { $0.ports.isEmpty } ? nil : rule.to.flatMap(\.ports)
                if needsHTTP, let ports { httpPorts.formUnion(ports) }
                let exactIdentities: [String]? =
                    rule.from.isEmpty
                    ? nil
                    : rule.from.allSatisfy { peer in
                        !peer.unauthenticated && peer.namespaces.isEmpty && peer.services.isEmpty
                            && !peer.identities.isEmpty && peer.identities.allSatisfy(\.isExact)
                    } ? rule.from.flatMap { $0.identities.map(\.description) } : nil
                var entry = indices[policy.action, default: Index()]
                switch (exactIdentities, ports) {
                case (let identities?, let ports):
                    for identity in Set(identities) {
                        for port in Set(ports ?? [0]) {
                            entry.exact[ExactKey(identity: identity, port: port), default: []].append(index)
                        }
                    }
                case (nil, let ports?):
                    for port in Set(ports) { entry.byPort[port, default: []].append(index) }
                case (nil, nil):
                    entry.anyPort.append(index)
                }
                indices[policy.action] = entry
            }
        }
        self.rules = rules
        self.indices = indices
        self.httpPorts = decidesRequests ? httpPorts : []
    }

    /// Rules that apply to this workload.
    public var ruleCount: Int { rules.count }

    public func evaluate(_ request: PolicyRequest) -> PolicyDecision {
        let httpPort = httpPorts.contains(request.port)
        let deny = firstMatch(.deny, request, httpPort: httpPort)
        var auditIndices: [Int] = []
        forEachCandidate(.audit, request) { index in
            if matches(rules[index], request, httpPort: httpPort, deciding: .audit) {
                auditIndices.append(index)
            }
            return true
        }
        let audits = Set(auditIndices).sorted().map { rules[$0].match }
        if let deny {
            return PolicyDecision(verdict: .deny, decidedBy: rules[deny].match, audits: audits)
        }
        if let allow = firstMatch(.allow, request, httpPort: httpPort) {
            return PolicyDecision(verdict: .allow, decidedBy: rules[allow].match, audits: audits)
        }
        return PolicyDecision(verdict: .deny, decidedBy: nil, audits: audits)
    }

    private func firstMatch(_ action: MeshPolicy.Action, _ request: PolicyRequest, httpPort: Bool) -> Int? {
        var best: Int?
        forEachCandidate(action, request) { index in
            if let best, best < index { return true }
            if matches(rules[index], request, httpPort: httpPort, deciding: action) { best = index }
            return true
        }
        return best
    }

    /// Calls `body` with every rule of `action` that could match, in no set order.
    private func forEachCandidate(_ action: MeshPolicy.Action, _ request: PolicyRequest, _ body: (Int) -> Bool) {
        guard let index = indices[action] else { return }
        if let peer = request.peer, !index.exact.isEmpty {
            for port in [request.port, 0] {
                for candidate in index.exact[ExactKey(identity: peer.description, port: port)] ?? [] {
                    guard body(candidate) else { return }
                }
            }
        }
        for candidate in index.byPort[request.port] ?? [] {
            guard body(candidate) else { return }
        }
        for candidate in index.anyPort {
            guard body(candidate) else { return }
        }
    }

    private func matches(
        _ compiled: CompiledRule,
        _ request: PolicyRequest,
        httpPort: Bool,
        deciding action: MeshPolicy.Action
    ) -> Bool {
        let rule = compiled.rule
        if rule.from.isEmpty {
            guard request.peer != nil else { return false }
        } else if !rule.from.contains(where: { Self.matches($0, request.peer) }) {
            return false
        }
        if compiled.needsHTTP && request.http == nil {
            // Not decidable without a request. On an HTTP port the requests will be
            // decided one by one; elsewhere an ALLOW cannot be granted and a DENY holds.
            switch action {
            case .allow: return httpPort && portMatches(rule, request.port)
            case .deny: return !httpPort && portMatches(rule, request.port)
            case .audit: return portMatches(rule, request.port)
            }
        }
        if !rule.to.isEmpty && !rule.to.contains(where: { Self.matches($0, request) }) {
            return false
        }
        return rule.when.allSatisfy { Self.matches($0, request.http) }
    }

    private func portMatches(_ rule: MeshPolicy.Rule, _ port: UInt16) -> Bool {
        rule.to.isEmpty || rule.to.contains { $0.ports.isEmpty || $0.ports.contains(port) }
    }

    private static func matches(_ entry: MeshPolicy.Peer, _ peer: PeerIdentity?) -> Bool {
        if entry.unauthenticated { return peer == nil }
        guard let peer else { return false }
        if !entry.identities.isEmpty && !entry.identities.contains(where: { $0.matches(peer) }) { return false }
        if !entry.namespaces.isEmpty {
            guard let namespace = peer.namespace, entry.namespaces.contains(namespace) else { return false }
        }
        if !entry.services.isEmpty {
            guard let service = peer.service, entry.services.contains(service) else { return false }
        }
        return true
    }

    private static func matches(_ entry: MeshPolicy.Destination, _ request: PolicyRequest) -> Bool {
        if !entry.ports.isEmpty && !entry.ports.contains(request.port) { return false }
        guard !entry.methods.isEmpty || !entry.paths.isEmpty || !entry.hosts.isEmpty else { return true }
        guard let http = request.http else { return false }
        if !entry.methods.isEmpty && !entry.methods.contains(http.method) { return false }
        if !entry.paths.isEmpty && !entry.paths.contains(where: { $0.matches(http.path) }) { return false }
        if !entry.hosts.isEmpty {
            guard let host = http.host?.lowercased() else { return false }
            let name = host.split(separator: ":").first.map(String.init) ?? host
            guard entry.hosts.contains(where: { $0 == host || $0 == name }) else { return false }
        }
        return true
    }

    private static func matches(_ condition: MeshPolicy.HeaderCondition, _ http: PolicyRequest.HTTP?) -> Bool {
        guard let http else { return false }
        return http.headers.contains { $0.name == condition.header && condition.values.contains($0.value) }
    }
}
