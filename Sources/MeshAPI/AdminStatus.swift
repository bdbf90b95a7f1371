#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// `GET /identity`: the workload identity a sidecar currently presents.
public struct IdentityStatus: Codable, Sendable, Equatable {
    /// Nil when the certificate carries no SPIFFE ID (refused at load, so not in practice).
    public var spiffeID: String?
    public var trustDomain: String
    public var notBefore: Date
    public var notAfter: Date
    /// Seconds until `notAfter` when the answer was made (negative once expired).
    public var secondsUntilExpiry: Double
    public var serialNumber: String
    /// Issuers from the leaf's issuer up to the last certificate of the chain file.
    public var issuers: [String]

    public init(
        spiffeID: String?,
        trustDomain: String,
        notBefore: Date,
        notAfter: Date,
        secondsUntilExpiry: Double,
        serialNumber: String,
        issuers: [String]
    ) {
        self.spiffeID = spiffeID
        self.trustDomain = trustDomain
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.secondsUntilExpiry = secondsUntilExpiry
        self.serialNumber = serialNumber
        self.issuers = issuers
    }
}

/// `GET /policies`: the policies in force and the files refused.
public struct PolicyStatus: Codable, Sendable, Equatable {
    public struct Loaded: Codable, Sendable, Equatable {
        /// `MeshPolicy` or `EgressPolicy`.
        public var kind: String
        /// `namespace/name`.
        public var name: String
        /// `ALLOW`, `DENY` or `AUDIT`.
        public var action: String
        public var rules: Int

        public init(kind: String, name: String, action: String, rules: Int) {
            self.kind = kind
            self.name = name
            self.action = action
            self.rules = rules
        }
    }

    public var directory: String
    public var policies: [Loaded]
    /// `file:line: field: reason` of each refused file (its last good version is in force).
    public var errors: [String]
    /// Ports whose requests are decided one by one as HTTP.
    public var httpPorts: [UInt16]

    public init(directory: String, policies: [Loaded], errors: [String], httpPorts: [UInt16]) {
        self.directory = directory
        self.policies = policies
        self.errors = errors
        self.httpPorts = httpPorts
    }
}

/// The body of every admin API error: `{"error": "…"}` with a 4xx or 5xx status.
public struct AdminError: Codable, Sendable, Equatable {
    public var error: String

    public init(error: String) { self.error = error }
}

/// `application/x-www-form-urlencoded`-style query strings, as the admin API reads and
/// `beectl` writes them.
public enum QueryString {
    /// Bytes written as they are; every other byte of the UTF-8 is `%XX`.
    private static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return "-._~/:*".utf8.contains(byte)
        }
    }

    public static func encode(_ items: [(name: String, value: String)]) -> String {
        items.map { item in
            escape(item.name) + "=" + escape(item.value)
        }.joined(separator: "&")
    }

    /// Splits `a=1&b=x%2Fy`; `+` is a space; a name without `=` has an empty value.
    public static func decode(_ query: Substring) -> [(name: String, value: String)] {
        query.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (unescape(parts[0]), parts.count > 1 ? unescape(parts[1]) : "")
        }
    }

    private static func escape(_ text: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var escaped: [UInt8] = []
        escaped.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            if isUnreserved(byte) {
                escaped.append(byte)
            } else {
                escaped += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            }
        }
        return String(decoding: escaped, as: UTF8.self)
    }

    /// `+` is a space and `%XX` a byte; text with a broken escape, or escapes that are
    /// not UTF-8, is taken as it stands (spaces put back).
    private static func unescape(_ text: Substring) -> String {
        var bytes: [UInt8] = []
        var valid = true
        var rest = Array(text.utf8)[...]
        while let byte = rest.popFirst() {
            switch byte {
            case UInt8(ascii: "+"): bytes.append(UInt8(ascii: " "))
            case UInt8(ascii: "%"):
                guard rest.count >= 2, let high = hexValue(rest[rest.startIndex]),
                    let low = hexValue(rest[rest.startIndex + 1])
                else {
                    valid = false
                    bytes.append(byte)
                    continue
                }
                bytes.append(high << 4 | low)
                rest = rest.dropFirst(2)
            default: bytes.append(byte)
            }
        }
        if valid, let decoded = String(validating: bytes, as: UTF8.self) { return decoded }
        return String(text.map { $0 == "+" ? " " : $0 })
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
