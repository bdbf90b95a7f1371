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
    /// A class, so that looking at a candidate costs one reference, not a copy of
    /// every array in the rule.
    final class CompiledRule: Sendable {
        let match: PolicyDecision.Match
        let action: MeshPolicy.Action
        let rule: MeshPolicy.Rule
        let needsHTTP: Bool

        init(match: PolicyDecision.Match, action: MeshPolicy.Action, rule: MeshPolicy.Rule, needsHTTP: Bool) {
            self.match = match
            self.action = action
            self.rule = rule
            self.needsHTTP = needsHTTP
        }
    }

    /// Scope 0: rules that can match a peer of any namespace.
    static let generalScope: Int32 = 0

    private let rules: [CompiledRule]
    /// Per rule: its action (`actionMask` bits) and `simpleFlag` when nothing but peers
    /// and ports decide it.
    private let kinds: [UInt8]
    static let actionMask: UInt8 = 3
    static let denyKind: UInt8 = 0
    static let allowKind: UInt8 = 1
    static let auditKind: UInt8 = 2
    static let simpleFlag: UInt8 = 4
    /// Candidate rules (indices into `rules`, ascending, every action) per scope and
    /// port (`runKey`).
    private let candidates: RuleRuns
    /// Scopes of rules whose every peer is an exact SPIFFE ID: a hit means the peer
    /// already matched.
    private let identityScopes: ScopeTable
    /// Scopes of rules whose every peer is confined to known namespaces (`namespaces:`,
    /// services, identity patterns with the namespace written out).
    private let namespaceScopes: ScopeTable
    /// Scopes of the remaining rules whose every peer is an identity pattern with its
    /// last segment written out (`ns/*/sa/monitor`), by that segment.
    private let lastSegmentScopes: ScopeTable
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
        var listings: [(key: UInt64, rule: Int32)] = []
        var identityScopes: [IndexKey: Int32] = [:]
        var namespaceScopes: [IndexKey: Int32] = [:]
        var lastSegmentScopes: [IndexKey: Int32] = [:]
        var nextScope = Self.generalScope
        /// The scope of `key`, numbered on first sight.
        func scope(_ key: String, _ scopes: inout [IndexKey: Int32]) -> Int32 {
            let key = IndexKey(key)
            if let known = scopes[key] { return known }
            nextScope += 1
            scopes[key] = nextScope
            return nextScope
        }
        // A rule listed twice under one scope and port (the same identity named twice)
        // is kept once by `RuleRuns`.
        func list(_ index: Int, scope: Int32, ports: [UInt16]?) {
            guard let ports else { return listings.append((Self.runKey(scope, 0), Int32(index))) }
            for port in ports { listings.append((Self.runKey(scope, port), Int32(index))) }
        }
        var httpPorts = extraHTTPPorts
        for policy in policies {
            let reference = policy.reference
            for (number, rule) in policy.rules.enumerated() {
                let index = rules.count
                let needsHTTP = rule.needsHTTP
                rules.append(
                    CompiledRule(
                        match: .init(policy: reference, rule: number),
                        action: policy.action,
                        rule: rule,
                        needsHTTP: needsHTTP
                    )
                )
                let ports: [UInt16]? =
                    rule.to.isEmpty || rule.to.contains { $0.ports.isEmpty } ? nil : rule.to.flatMap(\.ports)
                if needsHTTP, let ports { httpPorts.formUnion(ports) }
                let exactOnly =
                    !rule.from.isEmpty
                    && rule.from.allSatisfy { peer in
                        !peer.unauthenticated && peer.namespaces.isEmpty && peer.services.isEmpty
                            && !peer.identities.isEmpty && peer.identities.allSatisfy(\.isExact)
                    }
                if exactOnly {
                    for peer in rule.from {
                        for identity in peer.identities {
                            list(index, scope: scope(identity.description, &identityScopes), ports: ports)
                        }
                    }
                } else if let namespaces = Self.namespaces(of: rule) {
                    for namespace in namespaces {
                        list(index, scope: scope(namespace, &namespaceScopes), ports: ports)
                    }
                } else if let lastSegments = Self.lastSegments(of: rule) {
                    for segment in lastSegments {
                        list(index, scope: scope(segment, &lastSegmentScopes), ports: ports)
                    }
                } else {
                    list(index, scope: Self.generalScope, ports: ports)
                }
            }
        }
        self.rules = rules
        self.kinds = rules.map { rule in
            let action: UInt8 =
                switch rule.action {
                case .deny: Self.denyKind
                case .allow: Self.allowKind
                case .audit: Self.auditKind
                }
            // Nothing but peers and ports decide it: once listed under the request's
            // port and found under the peer's exact identity, it matches as it is.
            return action | (rule.needsHTTP ? 0 : Self.simpleFlag)
        }
        self.candidates = RuleRuns(listings)
        self.identityScopes = ScopeTable(identityScopes)
        self.namespaceScopes = ScopeTable(namespaceScopes)
        self.lastSegmentScopes = ScopeTable(lastSegmentScopes)
        self.httpPorts = decidesRequests ? httpPorts : []
    }

    /// Rules that apply to this workload.
    public var ruleCount: Int { rules.count }

    public func evaluate(_ request: PolicyRequest) -> PolicyDecision {
        var outcome = Outcome(httpPort: !httpPorts.isEmpty && httpPorts.contains(request.port))
        if let peer = request.peer {
            if let scope = identityScopes[peer.identityKey] { visit(scope, request, peerMatched: true, &outcome) }
            if let namespace = peer.namespaceKey, let scope = namespaceScopes[namespace] {
                visit(scope, request, peerMatched: false, &outcome)
            }
            if let segment = peer.lastSegmentKey, let scope = lastSegmentScopes[segment] {
                visit(scope, request, peerMatched: false, &outcome)
            }
        }
        visit(Self.generalScope, request, peerMatched: false, &outcome)
        let audited = outcome.auditedRules().map { rules[$0].match }
        if outcome.firstDeny != .max {
            return PolicyDecision(verdict: .deny, decidedBy: rules[outcome.firstDeny].match, audits: audited)
        }
        if outcome.firstAllow != .max {
            return PolicyDecision(verdict: .allow, decidedBy: rules[outcome.firstAllow].match, audits: audited)
        }
        return PolicyDecision(verdict: .deny, decidedBy: nil, audits: audited)
    }

    /// What the candidates visited so far decided.
    private struct Outcome {
        let httpPort: Bool
        var firstDeny = Int.max
        var firstAllow = Int.max
        /// The first AUDIT rule that matched, and the others: most decisions match at
        /// most one, and then allocate nothing for it here.
        var firstAudit = -1
        var moreAudits: [Int] = []

        mutating func audit(_ index: Int) {
            if firstAudit < 0 { firstAudit = index } else { moreAudits.append(index) }
        }

        /// Every AUDIT rule that matched, once each, in load order.
        func auditedRules() -> [Int] {
            guard firstAudit >= 0 else { return [] }
            guard !moreAudits.isEmpty else { return [firstAudit] }
            var all = moreAudits
            all.append(firstAudit)
            all.sort()
            var unique = 0
            for index in all.indices where unique == 0 || all[index] != all[unique - 1] {
                all[unique] = all[index]
                unique += 1
            }
            all.removeLast(all.count - unique)
            return all
        }
    }

    /// Where rules are listed: a scope number, and a port (0: rules for any port).
    static func runKey(_ scope: Int32, _ port: UInt16) -> UInt64 {
        UInt64(UInt32(bitPattern: scope)) << 16 | UInt64(port)
    }

    /// The candidates of one scope: those listed under the request's port, then those
    /// for any port.
    private func visit(_ scope: Int32, _ request: PolicyRequest, peerMatched: Bool, _ outcome: inout Outcome) {
        visit(candidates.range(of: Self.runKey(scope, request.port)), request, peerMatched: peerMatched, &outcome)
        if request.port != 0 {
            visit(candidates.range(of: Self.runKey(scope, 0)), request, peerMatched: peerMatched, &outcome)
        }
    }

    private func visit(_ run: Range<Int>, _ request: PolicyRequest, peerMatched: Bool, _ outcome: inout Outcome) {
        for position in run {
            let index = Int(candidates[position])
            // The action and shape come from a small contiguous array: rules that cannot
            // change the outcome are skipped without a cache miss.
            let kind = kinds[index]
            let action = kind & Self.actionMask
            if action == Self.denyKind && index >= outcome.firstDeny { continue }
            if action == Self.allowKind && (index >= outcome.firstAllow || index >= outcome.firstDeny) { continue }
            if peerMatched && kind & Self.simpleFlag != 0 {
                switch action {
                case Self.denyKind: outcome.firstDeny = index
                case Self.allowKind: outcome.firstAllow = index
                default: outcome.audit(index)
                }
                continue
            }
            let rule = rules[index]
            let httpPort = outcome.httpPort
            switch rule.action {
            case .deny where index < outcome.firstDeny:
                if matches(rule, request, httpPort: httpPort, deciding: .deny, peerMatched: peerMatched) {
                    outcome.firstDeny = index
                }
            case .allow where index < outcome.firstAllow && index < outcome.firstDeny:
                if matches(rule, request, httpPort: httpPort, deciding: .allow, peerMatched: peerMatched) {
                    outcome.firstAllow = index
                }
            case .audit:
                if matches(rule, request, httpPort: httpPort, deciding: .audit, peerMatched: peerMatched) {
                    outcome.audit(index)
                }
            default:
                break
            }
        }
    }

    /// The same decision without the index: every rule, in load order. The reference
    /// the index is tested against, and the baseline of `tools/bench policy`.
    public func evaluateWithoutIndex(_ request: PolicyRequest) -> PolicyDecision {
        let httpPort = httpPorts.contains(request.port)
        func first(_ action: MeshPolicy.Action) -> Int? {
            rules.indices.first {
                rules[$0].action == action && matches(rules[$0], request, httpPort: httpPort, deciding: action)
            }
        }
        let audits = rules.indices.filter {
            rules[$0].action == .audit && matches(rules[$0], request, httpPort: httpPort, deciding: .audit)
        }.map { rules[$0].match }
        if let deny = first(.deny) {
            return PolicyDecision(verdict: .deny, decidedBy: rules[deny].match, audits: audits)
        }
        if let allow = first(.allow) {
            return PolicyDecision(verdict: .allow, decidedBy: rules[allow].match, audits: audits)
        }
        return PolicyDecision(verdict: .deny, decidedBy: nil, audits: audits)
    }

    /// The namespaces a rule's peers must belong to, when every `from` entry pins them;
    /// nil when some entry admits a peer of any namespace (or an unauthenticated one).
    static func namespaces(of rule: MeshPolicy.Rule) -> Set<String>? {
        guard !rule.from.isEmpty else { return nil }
        var all: Set<String> = []
        for peer in rule.from {
            guard !peer.unauthenticated else { return nil }
            var pinned: Set<String>?
            func narrow(_ names: Set<String>) {
                pinned = pinned.map { $0.intersection(names) } ?? names
            }
            if !peer.namespaces.isEmpty { narrow(Set(peer.namespaces)) }
            if !peer.services.isEmpty {
                // `name.namespace` where the service account's name may hold dots too
                // (`a.b.shop` is `a.b` in `shop` or `a` in `b.shop`): every suffix after
                // a dot is a namespace the peer may be in, so the rule is listed under
                // each, and the full match decides.
                var names: Set<String> = []
                for service in peer.services {
                    var rest = Substring(service)
                    while let dot = rest.firstIndex(of: ".") {
                        rest = rest[rest.index(after: dot)...]
                        names.insert(String(rest))
                    }
                }
                narrow(names)
            }
            if !peer.identities.isEmpty {
                var names: Set<String> = []
                for pattern in peer.identities {
                    guard pattern.segments.count >= 2, pattern.segments[0] == "ns", pattern.segments[1] != "*" else {
                        names = []
                        break
                    }
                    names.insert(pattern.segments[1])
                }
                if !names.isEmpty { narrow(names) }
            }
            guard let pinned else { return nil }
            all.formUnion(pinned)
        }
        return all
    }

    /// The last path segments a rule's peers must end with, when every `from` entry is
    /// identity patterns only, each with its last segment written out.
    static func lastSegments(of rule: MeshPolicy.Rule) -> Set<String>? {
        guard !rule.from.isEmpty else { return nil }
        var all: Set<String> = []
        for peer in rule.from {
            guard !peer.unauthenticated, peer.namespaces.isEmpty, peer.services.isEmpty, !peer.identities.isEmpty
            else { return nil }
            for pattern in peer.identities {
                guard let last = pattern.segments.last, last != "*" else { return nil }
                all.insert(last)
            }
        }
        return all
    }

    private func matches(
        _ compiled: CompiledRule,
        _ request: PolicyRequest,
        httpPort: Bool,
        deciding action: MeshPolicy.Action,
        peerMatched: Bool = false
    ) -> Bool {
        let rule = compiled.rule
        if peerMatched {
            // Listed under the peer's exact identity: `from` already holds.
        } else if rule.from.isEmpty {
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
