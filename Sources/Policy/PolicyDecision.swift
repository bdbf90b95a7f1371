/// Who is asking, split once per connection for matching.
public struct PeerIdentity: Sendable, Equatable, CustomStringConvertible {
    public let trustDomain: String
    public let segments: [String]
    public let description: String
    /// `ns/<namespace>/…`: the namespace of a workload identity.
    public let namespace: String?
    /// The identity and namespace as index keys, hashed once per peer rather than once
    /// per decision.
    let identityKey: IndexKey
    let namespaceKey: IndexKey?
    /// The last path segment (the service account of `ns/<ns>/sa/<name>`).
    let lastSegmentKey: IndexKey?

    /// From a SPIFFE ID such as `spiffe://example.org/ns/shop/sa/frontend`; nil when it
    /// is not one.
    public init?(_ spiffeID: String) {
        guard spiffeID.hasPrefix("spiffe://") else { return nil }
        let parts = spiffeID.dropFirst("spiffe://".count).split(separator: "/", omittingEmptySubsequences: false)
        guard let domain = parts.first, !domain.isEmpty, parts.count > 1 else { return nil }
        trustDomain = String(domain)
        segments = parts.dropFirst().map(String.init)
        description = spiffeID
        namespace = segments.count >= 2 && segments[0] == "ns" ? segments[1] : nil
        identityKey = IndexKey(spiffeID)
        namespaceKey = namespace.map(IndexKey.init)
        lastSegmentKey = segments.last.map(IndexKey.init)
    }

    public static func == (left: PeerIdentity, right: PeerIdentity) -> Bool {
        left.description == right.description
    }

    /// `name.namespace` for `ns/<namespace>/sa/<name>`.
    public var service: String? {
        guard segments.count == 4, segments[0] == "ns", segments[2] == "sa" else { return nil }
        return "\(segments[3]).\(segments[1])"
    }
}

/// A string key whose hash is computed once.
struct IndexKey: Hashable, Sendable {
    let text: String
    let hash: Int

    init(_ text: String) {
        self.text = text
        self.hash = text.hashValue
    }

    func hash(into hasher: inout Hasher) { hasher.combine(hash) }

    static func == (left: IndexKey, right: IndexKey) -> Bool { left.hash == right.hash && left.text == right.text }
}

/// What a decision is about: the peer, the port it asked for, and, on HTTP ports,
/// the request.
public struct PolicyRequest: Sendable, Equatable {
    public struct HTTP: Sendable, Equatable {
        public var method: String
        public var path: Substring
        public var host: String?
        /// Lower-cased names.
        public var headers: [(name: String, value: String)]

        public init(method: String, path: Substring, host: String? = nil, headers: [(name: String, value: String)] = [])
        {
            self.method = method
            self.path = path
            self.host = host
            self.headers = headers
        }

        public static func == (left: HTTP, right: HTTP) -> Bool {
            left.method == right.method && left.path == right.path && left.host == right.host
                && left.headers.elementsEqual(right.headers) { $0.name == $1.name && $0.value == $1.value }
        }
    }

    /// Nil: the peer did not authenticate.
    public var peer: PeerIdentity?
    public var port: UInt16
    /// Nil: a connection-level decision (opaque TCP, or before the first request).
    public var http: HTTP?

    public init(peer: PeerIdentity?, port: UInt16, http: HTTP? = nil) {
        self.peer = peer
        self.port = port
        self.http = http
    }
}

/// The outcome of one evaluation, naming what made it.
public struct PolicyDecision: Sendable, Equatable, CustomStringConvertible {
    public enum Verdict: String, Sendable, Equatable {
        case allow, deny
    }

    /// A policy and the index of its rule that matched.
    public struct Match: Sendable, Equatable, CustomStringConvertible {
        public var policy: String
        public var rule: Int
        public var description: String { "\(policy)#\(rule)" }
    }

    public var verdict: Verdict
    /// Nil: nothing allowed it (`default-deny`).
    public var decidedBy: Match?
    /// AUDIT rules that matched: what they record, without effect on the verdict.
    public var audits: [Match]

    public var isAllowed: Bool { verdict == .allow }

    /// `allow by shop/orders-api#0`, `deny by default-deny`.
    public var description: String {
        "\(verdict.rawValue) by \(decidedBy?.description ?? "default-deny")"
            + (audits.isEmpty ? "" : " (audit: \(audits.map(\.description).joined(separator: ", ")))")
    }

    /// The policy name flows and logs show: `namespace/name` or `default-deny`.
    public var policyLabel: String { decidedBy?.policy ?? "default-deny" }
}
