import MeshIdentity

/// Stable virtual IPs for mesh services: `orders.default` always gets the same address
/// in 240.240.0.0/16 (and in fd00:bee::/64), derived from the SHA-256 of its name, so
/// that an app's cached DNS answer stays right across sidecar restarts. Two names whose
/// hashes collide are told apart by probing the next address; the `:15001` listener
/// maps an address back to its service.
struct VirtualIPs: Sendable {
    private var byService: [String: UInt16] = [:]
    private var byHost: [UInt16: String] = [:]

    /// The IPv4 and IPv6 addresses of `service` (`name.namespace`), allocating them.
    mutating func addresses(for service: String) -> (v4: [UInt8], v6: [UInt8]) {
        let host = byService[service] ?? allocate(service)
        return (Self.v4(host), Self.v6(host))
    }

    /// The service a virtual address (4 or 16 bytes) stands for.
    func service(at address: [UInt8]) -> String? {
        if address.count == 4, address[0] == 240, address[1] == 240 {
            return byHost[UInt16(address[2]) << 8 | UInt16(address[3])]
        }
        if address.count == 16, address[..<14] == Self.v6(0)[..<14] {
            return byHost[UInt16(address[14]) << 8 | UInt16(address[15])]
        }
        return nil
    }

    var count: Int { byService.count }

    private mutating func allocate(_ service: String) -> UInt16 {
        let digest = Digest.sha256(Array(service.utf8))
        // Hosts 1 ... 65534 (not the network or broadcast address).
        var host = UInt16(truncatingIfNeeded: Int(UInt16(digest[0]) << 8 | UInt16(digest[1])) % 65_534 + 1)
        precondition(byService.count < 65_534, "the virtual IP range is full")
        while byHost[host] != nil { host = host % 65_534 + 1 }
        byService[service] = host
        byHost[host] = service
        return host
    }

    private static func v4(_ host: UInt16) -> [UInt8] { [240, 240, UInt8(host >> 8), UInt8(host & 0xFF)] }

    private static func v6(_ host: UInt16) -> [UInt8] {
        [0xFD, 0x00, 0x0B, 0xEE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, UInt8(host >> 8), UInt8(host & 0xFF)]
    }
}
