import MeshNet

/// Which destinations outside the mesh a workload may reach: a captured outbound
/// connection whose original destination no route names is decided by these.
///
/// ```yaml
/// apiVersion: beemesh.io/v1
/// kind: EgressPolicy
/// metadata: {name: payments-gateway, namespace: shop}
/// spec:
///   selector: {matchLabels: {app: orders}}
///   action: ALLOW                      # ALLOW | DENY | AUDIT
///   rules:
///     - to: [{cidrs: [203.0.113.0/24], ports: [443]}]
/// ```
///
/// Same rules of evaluation as `MeshPolicy`: DENY beats ALLOW, no ALLOW means
/// `default-deny`, AUDIT only reports. `hosts` (DNS names) can be checked only once the
/// mesh DNS knows which name a connection dialled; until then a rule naming hosts never
/// allows and, as a DENY, always denies (fail closed).
public struct EgressPolicy: Sendable, Equatable {
    public struct Destination: Sendable, Equatable {
        public var networks: [IPNetwork] = []
        public var ports: [UInt16] = []
        public var hosts: [String] = []

        public init(networks: [IPNetwork] = [], ports: [UInt16] = [], hosts: [String] = []) {
            self.networks = networks
            self.ports = ports
            self.hosts = hosts
        }
    }

    public struct Rule: Sendable, Equatable {
        public var to: [Destination]

        public init(to: [Destination]) {
            self.to = to
        }
    }

    public var name: String
    public var namespace: String
    public var selector: [String: String]
    public var action: MeshPolicy.Action
    public var rules: [Rule]
    public var source: PolicySource

    init(header: PolicyHeader, rules: [Rule]) {
        name = header.name
        namespace = header.namespace
        selector = header.selector
        action = header.action
        source = header.source
        self.rules = rules
    }
}

extension EgressPolicy: WorkloadSelecting {}

/// A destination outside the mesh, as a captured connection dialled it.
public struct EgressRequest: Sendable, Equatable {
    public var family: IPNetwork.Family
    public var address: UInt128
    public var port: UInt16
    /// The DNS name dialled, when known.
    public var host: String?

    public init(family: IPNetwork.Family, address: UInt128, port: UInt16, host: String? = nil) {
        self.family = family
        self.address = address
        self.port = port
        self.host = host
    }
}

/// The egress policies of one workload. Egress sets are small: a linear scan.
public struct EgressSet: Sendable {
    public let policies: [EgressPolicy]

    public init(_ all: [EgressPolicy], for workload: Workload) {
        policies = all.filter { $0.selects(workload) }
    }

    public func evaluate(_ request: EgressRequest) -> PolicyDecision {
        var deny: PolicyDecision.Match?
        var allow: PolicyDecision.Match?
        var audits: [PolicyDecision.Match] = []
        for policy in policies {
            for (number, rule) in policy.rules.enumerated() where Self.matches(rule, request, policy.action) {
                let match = PolicyDecision.Match(policy: policy.reference, rule: number)
                switch policy.action {
                case .deny: deny = deny ?? match
                case .allow: allow = allow ?? match
                case .audit: audits.append(match)
                }
            }
        }
        if let deny { return PolicyDecision(verdict: .deny, decidedBy: deny, audits: audits) }
        if let allow { return PolicyDecision(verdict: .allow, decidedBy: allow, audits: audits) }
        return PolicyDecision(verdict: .deny, decidedBy: nil, audits: audits)
    }

    private static func matches(_ rule: EgressPolicy.Rule, _ request: EgressRequest, _ action: MeshPolicy.Action)
        -> Bool
    {
        rule.to.isEmpty
            || rule.to.contains { destination in
                if !destination.networks.isEmpty
                    && !destination.networks.contains(where: { $0.contains(request.address, family: request.family) })
                {
                    return false
                }
                if !destination.ports.isEmpty && !destination.ports.contains(request.port) { return false }
                if !destination.hosts.isEmpty {
                    // Unknown name: an ALLOW cannot be granted, a DENY holds.
                    guard let host = request.host?.lowercased() else { return action == .deny }
                    return destination.hosts.contains(host)
                }
                return true
            }
    }
}
