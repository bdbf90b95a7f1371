import MeshTestSupport
import Testing

@testable import Proxy

/// The DNS message codec and the virtual IPs, without sockets.
@Suite struct MeshDNSTests {
    /// What `dig orders.default.mesh A` sends: RD and AD set, one question, an EDNS OPT record.
    static func digQuery(_ name: String = "orders.default.mesh", type: UInt16 = 1, id: UInt16 = 0x1234) -> [UInt8] {
        var bytes: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xFF), 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1]
        for label in name.split(separator: ".") {
            bytes.append(UInt8(label.utf8.count))
            bytes += Array(label.utf8)
        }
        bytes += [0, UInt8(type >> 8), UInt8(type & 0xFF), 0, 1]
        bytes += [0, 0, 0x29, 0x10, 0x00, 0, 0, 0, 0, 0, 0]  // OPT: root, type 41, 4096 bytes
        return bytes
    }

    @Test func aDigQueryIsReadAndAnsweredWithAnAuthoritativeARecord() throws {
        let query = try DNSQuery(parsing: Self.digQuery("Orders.Default.MESH"))
        #expect(query.name == "orders.default.mesh" && query.type == DNSQuery.typeA && query.recursionDesired)
        let answer = query.answer(addresses: [[240, 240, 1, 2]], ttl: 30)
        let question = Array(Self.digQuery("Orders.Default.MESH")[12..<(12 + 21 + 4)])
        let expected: [UInt8] =
            [0x12, 0x34, 0x85, 0x80, 0, 1, 0, 1, 0, 0, 0, 0] + question
            + [0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 240, 240, 1, 2]
        #expect(answer == expected)
    }

    @Test func unknownNamesGetNXDOMAINAndAAAAGetsSixteenBytes() throws {
        let query = try DNSQuery(parsing: Self.digQuery("nobody.default.mesh", type: 28))
        let nx = query.answer(addresses: [], ttl: 30, rcode: 3)
        #expect(nx[3] & 0x0F == 3 && nx[6] == 0 && nx[7] == 0)
        let aaaa = query.answer(addresses: [[UInt8](repeating: 0xAB, count: 16)], ttl: 5)
        #expect(aaaa.suffix(18).prefix(2) == [0, 16] && aaaa.suffix(16) == [UInt8](repeating: 0xAB, count: 16)[...])
        #expect(Array(aaaa[aaaa.count - 26..<aaaa.count - 24]) == [0, 28], "type AAAA")
    }

    static let dotInsideALabel: [UInt8] =
        [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 12] + Array("orders.secns".utf8) + [4] + Array("mesh".utf8) + [
            0, 0, 1, 0, 1,
        ]

    @Test(
        "malformed queries are refused with a reason",
        arguments: [
            ([UInt8](repeating: 0, count: 11), DNSError.Code.truncated),
            ([0, 1, 0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0] + [0, 0, 1, 0, 1], .notAQuery),
            ([0, 1, 0x28, 0, 0, 1, 0, 0, 0, 0, 0, 0] + [0, 0, 1, 0, 1], .notAQuery),
            ([0, 1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0] + [0, 0, 1, 0, 1], .malformed),
            ([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0] + [0xC0, 0x0C, 0, 1, 0, 1], .malformed),
            (
                [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0] + [64] + [UInt8](repeating: 97, count: 64) + [0, 0, 1, 0, 1],
                .malformed
            ),
            ([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0] + [1, 97, 0, 0, 1, 0, 3], .malformed),
            ([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0] + [5, 97, 98], .truncated),
            // Finding 13 of the node security review: `orders\.secns.mesh` (what
            // `dig 'orders\.secns.mesh'` sends) answered as orders.secns.mesh.
            (Self.dotInsideALabel, .malformed),
        ]
    )
    func malformed(bytes: [UInt8], code: DNSError.Code) {
        let error = #expect(throws: DNSError.self) { try DNSQuery(parsing: bytes) }
        #expect(error?.code == code)
    }

    @Test func nameLongerThan255BytesIsRefused() {
        let long = (0..<5).map { _ in String(repeating: "a", count: 60) }.joined(separator: ".")
        let error = #expect(throws: DNSError.self) { try DNSQuery(parsing: Self.digQuery(long)) }
        #expect(error?.code == .malformed)
    }

    @Test func truncatedAndRandomInputNeverCrashes() {
        let valid = Self.digQuery()
        for length in 0..<(valid.count - 11) {  // up to the end of the question
            #expect(throws: DNSError.self) { try DNSQuery(parsing: Array(valid.prefix(length))) }
        }
        var random = SplitMix64(seed: 53)
        var parsed = 0
        for _ in 0..<20_000 {
            var bytes = valid
            bytes[Int(random.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: random.next())
            if (try? DNSQuery(parsing: bytes)) != nil { parsed += 1 }
        }
        #expect(parsed > 0)
        #expect(DNSQuery.formatError(for: valid) == [0x12, 0x34, 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0])
        #expect(DNSQuery.formatError(for: [1, 2]) == nil)
    }

    @Test func virtualIPsAreStableDistinctAndMapBack() {
        var first = VirtualIPs()
        var second = VirtualIPs()
        let names = (0..<5000).map { "service\($0).default" }
        var seen: Set<[UInt8]> = []
        for name in names {
            let (v4, v6) = first.addresses(for: name)
            #expect(v4[0] == 240 && v4[1] == 240 && v6[0] == 0xFD)
            #expect(seen.insert(v4).inserted, "\(name) got a taken address")
            #expect(first.service(at: v4) == name && first.service(at: v6) == name)
        }
        // Another sidecar allocating in the same order gives the same answers.
        for name in names.prefix(100) { #expect(second.addresses(for: name) == first.addresses(for: name)) }
        #expect(first.addresses(for: names[7]) == first.addresses(for: names[7]), "asked again: the same")
        #expect(first.count == 5000)
        #expect(first.service(at: [10, 0, 0, 1]) == nil)
    }
}
