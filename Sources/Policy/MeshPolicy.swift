/// One policy document from `/etc/beemesh/policies`, as parsed.
///
/// ```yaml
/// apiVersion: beemesh.io/v1
/// kind: MeshPolicy
/// metadata: {name: orders-api, namespace: shop}
/// spec:
///   selector: {matchLabels: {app: orders}}      # empty: every workload of the namespace
///   action: ALLOW                                # ALLOW | DENY | AUDIT
///   rules:
///     - from: [{identities: ["spiffe://example.org/ns/shop/sa/*"]}, {namespaces: [ops]}]
///       to: [{ports: [8080], methods: [GET], paths: ["/api/*"]}]
///       when: [{header: x-env, values: [prod]}]
/// ```
///
/// Inside one `from`, `to` or `when` entry every field given must match; entries of
/// one list are alternatives; an empty list matches anything, except that an empty
/// `from` matches only authenticated peers: a plaintext peer is admitted only by an
/// entry that says `unauthenticated: true`.
public struct MeshPolicy: Sendable, Equatable {
    public enum Action: String, Sendable, Equatable, CaseIterable {
        case allow = "ALLOW"
        case deny = "DENY"
        /// Records what matched without affecting the flow: the dry run before enforcing.
        case audit = "AUDIT"
    }

    public struct Rule: Sendable, Equatable {
        public var from: [Peer] = []
        public var to: [Destination] = []
        public var when: [HeaderCondition] = []

        public init(from: [Peer] = [], to: [Destination] = [], when: [HeaderCondition] = []) {
            self.from = from
            self.to = to
            self.when = when
        }

        /// Whether the rule can be decided only by looking at an HTTP request.
        public var needsHTTP: Bool {
            !when.isEmpty || to.contains { !$0.methods.isEmpty || !$0.paths.isEmpty || !$0.hosts.isEmpty }
        }
    }

    /// Who the peer is.
    public struct Peer: Sendable, Equatable {
        public var identities: [IdentityPattern] = []
        public var namespaces: [String] = []
        /// `name.namespace`: a peer whose identity is `…/ns/<namespace>/sa/<name>`.
        public var services: [String] = []
        /// Matches peers that did not authenticate (plaintext through inbound capture).
        public var unauthenticated = false

        public init(
            identities: [IdentityPattern] = [],
            namespaces: [String] = [],
            services: [String] = [],
            unauthenticated: Bool = false
        ) {
            self.identities = identities
            self.namespaces = namespaces
            self.services = services
            self.unauthenticated = unauthenticated
        }
    }

    /// What the peer asks for.
    public struct Destination: Sendable, Equatable {
        public var ports: [UInt16] = []
        public var methods: [String] = []
        public var paths: [PathPattern] = []
        public var hosts: [String] = []

        public init(ports: [UInt16] = [], methods: [String] = [], paths: [PathPattern] = [], hosts: [String] = []) {
            self.ports = ports
            self.methods = methods
            self.paths = paths
            self.hosts = hosts
        }
    }

    /// A request header (name compared case-insensitively) with one of `values`.
    public struct HeaderCondition: Sendable, Equatable {
        public var header: String
        public var values: [String]

        public init(header: String, values: [String]) {
            self.header = header.lowercased()
            self.values = values
        }
    }

    public var name: String
    public var namespace: String
    /// `matchLabels`; empty selects every workload of `namespace`.
    public var selector: [String: String]
    public var action: Action
    public var rules: [Rule]
    /// Where the document came from, for decisions and errors.
    public var source: PolicySource

    public init(
        name: String,
        namespace: String,
        selector: [String: String] = [:],
        action: Action,
        rules: [Rule],
        source: PolicySource = PolicySource(file: "", line: nil)
    ) {
        self.name = name
        self.namespace = namespace
        self.selector = selector
        self.action = action
        self.rules = rules
        self.source = source
    }

    init(header: PolicyHeader, rules: [Rule]) {
        self.init(
            name: header.name,
            namespace: header.namespace,
            selector: header.selector,
            action: header.action,
            rules: rules,
            source: header.source
        )
    }
}

/// What every policy kind has in common, as parsed.
struct PolicyHeader {
    var name: String
    var namespace: String
    var selector: [String: String]
    var action: MeshPolicy.Action
    var source: PolicySource
}

/// A policy that selects workloads by namespace and labels.
public protocol WorkloadSelecting {
    var name: String { get }
    var namespace: String { get }
    /// `matchLabels`; empty selects every workload of `namespace`.
    var selector: [String: String] { get }
}

extension WorkloadSelecting {
    /// `namespace/name`, how decisions name the policy.
    public var reference: String { "\(namespace)/\(name)" }

    /// Whether the policy applies to a workload.
    public func selects(_ workload: Workload) -> Bool {
        namespace == workload.namespace && selector.allSatisfy { workload.labels[$0.key] == $0.value }
    }
}

extension MeshPolicy: WorkloadSelecting {}

/// The workload a sidecar serves: its namespace and labels (from the agent).
public struct Workload: Sendable, Equatable {
    public var namespace: String
    public var labels: [String: String]

    public init(namespace: String, labels: [String: String] = [:]) {
        self.namespace = namespace
        self.labels = labels
    }
}

/// A file and line a policy came from.
public struct PolicySource: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int?

    public init(file: String, line: Int?) {
        self.file = file
        self.line = line
    }

    public var description: String { line.map { "\(file):\($0)" } ?? file }
}

/// A SPIFFE ID pattern: `*` stands for exactly one path segment
/// (`spiffe://example.org/ns/*/sa/frontend`); the trust domain is compared exactly.
public struct IdentityPattern: Sendable, Equatable, CustomStringConvertible {
    public let trustDomain: String
    public let segments: [String]
    public let description: String

    public init(parsing text: String) throws(PolicyPatternError) {
        let scheme = "spiffe://"
        let utf8 = text.utf8
        guard utf8.starts(with: scheme.utf8) else {
            throw PolicyPatternError("'\(text)' is not a SPIFFE ID pattern (spiffe://trust-domain/path, * per segment)")
        }
        // One pass: the trust domain, then each segment as it ends (a pattern is read
        // for every rule of every policy file on each reload).
        var domain: String?
        var segments: [String] = []
        segments.reserveCapacity(4)
        var start = utf8.index(utf8.startIndex, offsetBy: scheme.utf8.count)
        guard utf8.count <= 2048 else { throw PolicyPatternError("'\(text.prefix(64))…': longer than 2048 bytes") }
        var stars = 0
        var position = start
        while true {
            let atEnd = position == utf8.endIndex
            let byte = atEnd ? UInt8(ascii: "/") : utf8[position]
            if byte == UInt8(ascii: "*") {
                stars += 1
            } else if byte != UInt8(ascii: "/") {
                // The SPIFFE ID grammar (as `SpiffeID` parses peers): a pattern outside it
                // could never match, and a DENY that never matches is a silent hole.
                guard Self.isIDByte(byte, inDomain: domain == nil) else {
                    throw PolicyPatternError(
                        "'\(text)': "
                            + (domain == nil
                                ? "the trust domain may hold only a-z 0-9 . - _"
                                : "path segments may hold only A-Z a-z 0-9 . - _, or be *")
                    )
                }
            } else {
                let part = Substring(utf8[start..<position])
                if domain == nil {
                    guard !part.isEmpty, stars == 0 else {
                        throw PolicyPatternError("'\(text)': the trust domain must be written out (no *)")
                    }
                    domain = String(part)
                } else {
                    guard !part.isEmpty, stars == 0 || part == "*" else {
                        throw PolicyPatternError(
                            "'\(text)': path segments must be non-empty, and * stands alone in its segment"
                        )
                    }
                    guard part != ".", part != ".." else {
                        throw PolicyPatternError("'\(text)': '.' and '..' path segments are not allowed")
                    }
                    segments.append(String(part))
                }
                if atEnd { break }
                stars = 0
                start = utf8.index(after: position)
            }
            position = utf8.index(after: position)
        }
        guard !segments.isEmpty, let domain else {
            throw PolicyPatternError("'\(text)': path segments must be non-empty, and * stands alone in its segment")
        }
        trustDomain = domain
        self.segments = segments
        description = text
    }

    private static func isIDByte(_ byte: UInt8, inDomain: Bool) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."),
            UInt8(ascii: "-"), UInt8(ascii: "_"):
            return true
        case UInt8(ascii: "A")...UInt8(ascii: "Z"):
            return !inDomain
        default:
            return false
        }
    }

    /// Exact (no wildcard): usable as a hash key.
    public var isExact: Bool { !segments.contains("*") }

    func matches(_ peer: PeerIdentity) -> Bool {
        guard peer.trustDomain == trustDomain, peer.segments.count == segments.count else { return false }
        for (pattern, segment) in zip(segments, peer.segments) where pattern != "*" && pattern != segment {
            return false
        }
        return true
    }
}

/// An HTTP path pattern: exact (`/healthz`), prefix (`/api/` followed by `*` at the
/// end: `/api/*`), or glob (`*` anywhere else matches within one segment).
public struct PathPattern: Sendable, Equatable, CustomStringConvertible {
    enum Kind: Equatable {
        case exact(String)
        case prefix(String)
        case glob([Substring])
    }

    let kind: Kind
    public let description: String

    public init(parsing text: String) throws(PolicyPatternError) {
        guard text.hasPrefix("/") else { throw PolicyPatternError("'\(text)' is not a path (it must start with /)") }
        description = text
        let stars = text.filter { $0 == "*" }.count
        if stars == 0 {
            kind = .exact(text)
        } else if stars == 1, text.hasSuffix("*") {
            kind = .prefix(String(text.dropLast()))
        } else {
            kind = .glob(text.split(separator: "*", omittingEmptySubsequences: false))
        }
    }

    public func matches(_ path: Substring) -> Bool {
        switch kind {
        case .exact(let value): return path == value
        case .prefix(let value): return path.hasPrefix(value)
        case .glob(let pieces): return Self.glob(pieces[...], path)
        }
    }

    /// Pieces alternate with `*`, each `*` matching any run without '/'.
    private static func glob(_ pieces: ArraySlice<Substring>, _ path: Substring) -> Bool {
        guard let first = pieces.first else { return path.isEmpty }
        guard path.hasPrefix(first) else { return false }
        var rest = path.dropFirst(first.count)
        let remaining = pieces.dropFirst()
        if remaining.isEmpty { return rest.isEmpty }
        while true {
            if glob(remaining, rest) { return true }
            guard let next = rest.first, next != "/" else { return false }
            rest = rest.dropFirst()
        }
    }
}

/// A malformed pattern in a policy.
public struct PolicyPatternError: Error, Equatable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
