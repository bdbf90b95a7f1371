import MeshNet

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A capture option that cannot be used. Raised before anything touches the kernel.
public struct CaptureOptionError: Error, Equatable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}

/// What `beemesh-proxy capture install` programs into a pod's network namespace.
///
/// Defaults are the mesh's port conventions (DESIGN.md, "Data path"): outbound TCP to
/// 15001, inbound TCP to 15006, DNS to 15053 (the proxy's mesh DNS), and the
/// proxy's own listeners (15008 mTLS, 15000 admin, 15090 metrics) never redirected.
public struct CaptureOptions: Sendable, Equatable {
    /// Sockets owned by this uid or this gid are the proxy's: never redirected.
    public var proxyUID: UInt32 = 1337
    public var proxyGID: UInt32 = 1337
    public var outboundPort: UInt16 = 15001
    public var inboundPort: UInt16 = 15006
    public var dnsPort: UInt16 = 15053
    /// UDP and TCP to port 53 redirected to `dnsPort`. Default on.
    public var captureDNS = true
    /// Inbound ports that reach the proxy itself and are never redirected.
    public var proxyPorts: [UInt16] = [15008, 15000, 15090]
    public var excludeOutboundPorts: [UInt16] = []
    public var excludeOutboundNetworks: [IPNetwork] = []
    public var excludeInboundPorts: [UInt16] = []
    /// When not empty, only these inbound ports are redirected.
    public var includeInboundPorts: [UInt16] = []
    /// Let traffic other than TCP in and out of the pod. Off: the filter chains drop it
    /// (only DNS, which the proxy answers, and ICMPv6 neighbour discovery pass).
    public var allowNonTCP = false

    public init() {}

    /// Parses a port list such as `8080,9090` (commas or spaces; repeated options are
    /// joined by the caller). Each port must be 1...65535.
    public static func ports(_ text: String, option: String) throws(CaptureOptionError) -> [UInt16] {
        var ports: [UInt16] = []
        for item in text.split(whereSeparator: { $0 == "," || $0 == " " }) {
            guard item.allSatisfy(\.isASCII), let value = Int(item), (1...65535).contains(value) else {
                throw CaptureOptionError("\(option): '\(item)' is not a port (1-65535)")
            }
            if !ports.contains(UInt16(value)) { ports.append(UInt16(value)) }
        }
        return ports
    }

    /// Parses a CIDR list such as `10.0.0.0/8,fd00::/8`.
    public static func networks(_ text: String, option: String) throws(CaptureOptionError) -> [IPNetwork] {
        var networks: [IPNetwork] = []
        for item in text.split(whereSeparator: { $0 == "," || $0 == " " }) {
            do {
                networks.append(try IPNetwork(parsing: String(item)))
            } catch {
                throw CaptureOptionError("\(option): \(error.description)")
            }
        }
        return networks
    }

    /// A uid, numeric or a user name known to this system.
    public static func userID(_ text: String, option: String) throws(CaptureOptionError) -> UInt32 {
        if let value = UInt32(text) { return value }
        guard let entry = getpwnam(text) else {
            throw CaptureOptionError("\(option): no user named '\(text)' on this system")
        }
        return entry.pointee.pw_uid
    }

    /// A gid, numeric or a group name known to this system.
    public static func groupID(_ text: String, option: String) throws(CaptureOptionError) -> UInt32 {
        if let value = UInt32(text) { return value }
        guard let entry = getgrnam(text) else {
            throw CaptureOptionError("\(option): no group named '\(text)' on this system")
        }
        return entry.pointee.gr_gid
    }

    /// Refuses combinations that would capture the proxy's own listeners or leave no
    /// port for a redirect.
    public func validate() throws(CaptureOptionError) {
        let redirectTargets = [outboundPort, inboundPort] + (captureDNS ? [dnsPort] : [])
        for port in redirectTargets where port == 0 {
            throw CaptureOptionError("redirect ports must be 1-65535")
        }
        if outboundPort == inboundPort {
            throw CaptureOptionError("the outbound and inbound capture ports are both \(outboundPort)")
        }
        let overlap = Set(includeInboundPorts).intersection(proxyPorts)
        if let port = overlap.sorted().first {
            throw CaptureOptionError(
                "--include-inbound-ports: \(port) is one of the proxy's own ports and is never redirected"
            )
        }
    }
}
