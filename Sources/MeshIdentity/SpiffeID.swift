/// A SPIFFE ID: `spiffe://<trust-domain>/<path>`, the name of a workload identity.
///
/// Parsing follows the SPIFFE ID specification strictly, because an identity that two
/// parsers read differently is a hole: lowercase trust domain of `[a-z0-9.-_]`, path
/// segments of `[A-Za-z0-9.-_]`, no empty, `.` or `..` segments, no trailing slash, no
/// port, user info, query or fragment, at most 2048 bytes.
public struct SpiffeID: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// The trust domain, e.g. `example.org`.
    public let trustDomain: TrustDomain
    /// The path, empty or starting with `/`, e.g. `/ns/default/sa/orders`.
    public let path: String

    public var description: String { "spiffe://\(trustDomain.name)\(path)" }

    /// Parses and validates a SPIFFE ID.
    public init(_ string: String) throws(IdentityError) {
        let bytes = Array(string.utf8)
        guard bytes.count <= 2048 else {
            throw IdentityError(.invalidSpiffeID, "\(string.prefix(64))…: longer than 2048 bytes")
        }
        let scheme = Array("spiffe://".utf8)
        guard bytes.starts(with: scheme) else {
            throw IdentityError(.invalidSpiffeID, "\(string): scheme must be spiffe://")
        }
        let rest = bytes[scheme.count...]
        let slash = rest.firstIndex(of: UInt8(ascii: "/")) ?? rest.endIndex
        let domainBytes = rest[rest.startIndex..<slash]
        let pathBytes = rest[slash...]
        let domain = String(decoding: domainBytes, as: UTF8.self)
        self.trustDomain = try TrustDomain(domain, context: string)
        if !pathBytes.isEmpty {
            let segments = pathBytes.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
            for segment in segments {
                guard !segment.isEmpty else {
                    throw IdentityError(.invalidSpiffeID, "\(string): empty path segment or trailing slash")
                }
                guard !(segment.count == 1 && segment.first == UInt8(ascii: ".")),
                    !(segment.count == 2 && segment.allSatisfy { $0 == UInt8(ascii: ".") })
                else {
                    throw IdentityError(.invalidSpiffeID, "\(string): '.' and '..' path segments are not allowed")
                }
                guard segment.allSatisfy(SpiffeID.isPathByte) else {
                    throw IdentityError(.invalidSpiffeID, "\(string): path may hold only A-Z a-z 0-9 . - _")
                }
            }
        }
        self.path = String(decoding: pathBytes, as: UTF8.self)
    }

    /// Builds the conventional workload identity `spiffe://TD/ns/NS/sa/SA`.
    public init(trustDomain: TrustDomain, namespace: String, serviceAccount: String) throws(IdentityError) {
        try self.init("spiffe://\(trustDomain.name)/ns/\(namespace)/sa/\(serviceAccount)")
    }

    /// The namespace of a `/ns/NS/sa/SA` identity, or nil for other paths.
    public var namespace: String? { workloadParts?.namespace }
    /// The service account of a `/ns/NS/sa/SA` identity, or nil for other paths.
    public var serviceAccount: String? { workloadParts?.serviceAccount }

    private var workloadParts: (namespace: String, serviceAccount: String)? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[1] == "ns", parts[3] == "sa" else { return nil }
        return (String(parts[2]), String(parts[4]))
    }

    public static func < (lhs: SpiffeID, rhs: SpiffeID) -> Bool { lhs.description < rhs.description }

    private static func isPathByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "_"):
            return true
        default:
            return false
        }
    }
}

/// A SPIFFE trust domain: the name of one root of trust, e.g. `example.org`.
public struct TrustDomain: Hashable, Sendable, CustomStringConvertible {
    /// The trust domain name, lowercase.
    public let name: String

    public var description: String { name }

    /// Validates a trust domain name (`[a-z0-9.-_]+`, at most 255 bytes).
    public init(_ name: String) throws(IdentityError) {
        try self.init(name, context: name)
    }

    init(_ name: String, context: String) throws(IdentityError) {
        guard !name.isEmpty else {
            throw IdentityError(.invalidSpiffeID, "\(context): trust domain is empty")
        }
        guard name.utf8.count <= 255 else {
            throw IdentityError(.invalidSpiffeID, "\(context): trust domain longer than 255 bytes")
        }
        let valid = name.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "_"):
                return true
            default:
                return false
            }
        }
        guard valid else {
            throw IdentityError(
                .invalidSpiffeID,
                "\(context): trust domain may hold only a-z 0-9 . - _ (no uppercase, port or user info)"
            )
        }
        self.name = name
    }
}
