#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An IPv4 or IPv6 network written `address/prefix` (a bare address is a /32 or /128).
public struct IPNetwork: Sendable, Hashable, CustomStringConvertible {
    public enum Family: Sendable, Hashable {
        case ipv4, ipv6

        /// Address width in bytes.
        public var byteCount: Int { self == .ipv4 ? 4 : 16 }
        var bitCount: Int { byteCount * 8 }
    }

    public let family: Family
    /// The network address, host bits zero, as an integer (IPv4 in the low 32 bits).
    public let base: UInt128
    public let prefixLength: Int

    /// Parses `10.0.0.0/8`, `fd00::/8`, `192.0.2.7`. Host bits must be zero, so that a
    /// typo such as `10.1.0.0/8` is refused rather than silently widened.
    public init(parsing text: String) throws(IPNetworkError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let addressText = parts.first, !addressText.isEmpty else {
            throw IPNetworkError("'\(text)' is not an address or CIDR (expected e.g. 10.0.0.0/8 or fd00::/8)")
        }
        guard let (family, value) = Self.parseAddress(String(addressText)) else {
            throw IPNetworkError("'\(text)': '\(addressText)' is not an IPv4 or IPv6 address")
        }
        var prefix = family.bitCount
        if parts.count == 2 {
            guard let length = Int(parts[1]), (0...family.bitCount).contains(length),
                parts[1].allSatisfy(\.isASCII)
            else {
                throw IPNetworkError(
                    "'\(text)': prefix length must be a number from 0 to \(family.bitCount)"
                )
            }
            prefix = length
        }
        let masked = value & Self.mask(prefix: prefix, family: family)
        guard masked == value else {
            let suggestion = IPNetwork(family: family, base: masked, prefixLength: prefix)
            throw IPNetworkError("'\(text)' has host bits set; did you mean \(suggestion)?")
        }
        self.init(family: family, base: value, prefixLength: prefix)
    }

    public init(family: Family, base: UInt128, prefixLength: Int) {
        self.family = family
        self.base = base
        self.prefixLength = prefixLength
    }

    /// The first address after the network, or nil when it runs to the end of the space.
    public var end: UInt128? {
        let size = UInt128(1) << (family.bitCount - prefixLength)
        let last = base + (size - 1)
        return last == Self.mask(prefix: family.bitCount, family: family) ? nil : last + 1
    }

    public func contains(_ address: UInt128, family: Family) -> Bool {
        family == self.family && address & Self.mask(prefix: prefixLength, family: family) == base
    }

    public var description: String {
        "\(Self.format(base, family: family))/\(prefixLength)"
    }

    public static func mask(prefix: Int, family: Family) -> UInt128 {
        let all: UInt128 = family == .ipv4 ? 0xFFFF_FFFF : .max
        guard prefix > 0 else { return 0 }
        return all & ~((UInt128(1) << (family.bitCount - prefix)) - 1)
    }

    /// Big-endian bytes of an address value.
    public static func bytes(_ value: UInt128, family: Family) -> [UInt8] {
        (0..<family.byteCount).map { index in
            UInt8(truncatingIfNeeded: value >> ((family.byteCount - 1 - index) * 8))
        }
    }

    public static func value(_ bytes: some Collection<UInt8>) -> UInt128 {
        bytes.reduce(UInt128(0)) { ($0 << 8) | UInt128($1) }
    }

    /// Parses a numeric IPv4 or IPv6 address.
    public static func parseAddress(_ text: String) -> (Family, UInt128)? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return (.ipv4, withUnsafeBytes(of: &v4) { value($0) })
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return (.ipv6, withUnsafeBytes(of: &v6) { value($0) })
        }
        return nil
    }

    public static func format(_ value: UInt128, family: Family) -> String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let raw = bytes(value, family: family)
        let domain = family == .ipv4 ? AF_INET : AF_INET6
        _ = raw.withUnsafeBytes { inet_ntop(domain, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// An address or network that cannot be parsed.
public struct IPNetworkError: Error, Equatable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
