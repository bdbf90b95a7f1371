import MeshNet
import Testing

@testable import Capture

@Suite struct IPNetworkTests {
    @Test func parsesNetworksAndBareAddresses() throws {
        let v4 = try IPNetwork(parsing: "10.0.0.0/8")
        #expect(v4.family == .ipv4 && v4.prefixLength == 8 && v4.base == 0x0A00_0000)
        #expect(v4.description == "10.0.0.0/8")
        #expect(try IPNetwork(parsing: "192.0.2.7").prefixLength == 32)
        let v6 = try IPNetwork(parsing: "fd00::/8")
        #expect(v6.family == .ipv6 && v6.base == UInt128(0xFD) << 120)
        #expect(try IPNetwork(parsing: "::1").description == "::1/128")
        #expect(try IPNetwork(parsing: "0.0.0.0/0").end == nil)
    }

    @Test(arguments: [
        ("10.1.0.0/8", "host bits set; did you mean 10.0.0.0/8?"),
        ("10.0.0.0/33", "prefix length must be a number from 0 to 32"),
        ("fd00::/129", "prefix length must be a number from 0 to 128"),
        ("10.0.0.0/", "prefix length"),
        ("10.0.0.0/8/8", "is not an address or CIDR"),
        ("example.com/8", "is not an IPv4 or IPv6 address"),
        ("", "is not an address or CIDR"),
        ("10.0.0.256", "is not an IPv4 or IPv6 address"),
    ])
    func refusesMalformedNetworks(text: String, message: String) {
        #expect {
            try IPNetwork(parsing: text)
        } throws: { error in
            (error as? IPNetworkError)?.description.contains(message) == true
        }
    }

    @Test func containsComparesOnlyTheNetworkBits() throws {
        let network = try IPNetwork(parsing: "10.77.0.0/24")
        let (family, inside) = try #require(IPNetwork.parseAddress("10.77.0.200"))
        #expect(network.contains(inside, family: family))
        let (_, outside) = try #require(IPNetwork.parseAddress("10.77.1.1"))
        #expect(!network.contains(outside, family: .ipv4))
        #expect(!network.contains(inside, family: .ipv6))
    }

    @Test func intervalsAreMergedSortedAndDisjoint() throws {
        let networks = try ["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "11.0.0.0/8", "fd00::/8"].map {
            try IPNetwork(parsing: $0)
        }
        let v4 = AddressIntervals(networks, family: .ipv4).intervals
        #expect(
            v4 == [
                .init(start: 0x0A00_0000, end: 0x0C00_0000),
                .init(start: 0xC0A8_0000, end: 0xC0A9_0000),
            ]
        )
        let v6 = AddressIntervals(networks, family: .ipv6).intervals
        #expect(v6 == [.init(start: UInt128(0xFD) << 120, end: UInt128(0xFE) << 120)])
        let everything = AddressIntervals([try IPNetwork(parsing: "0.0.0.0/0"), networks[0]], family: .ipv4)
        #expect(everything.intervals == [.init(start: 0, end: nil)])
    }
}
