/// The part of DNS (RFC 1035) that mesh DNS speaks: one question in, its answer out.
///
/// ```
/// header   id:u16 flags:u16 qdcount:u16 ancount:u16 nscount:u16 arcount:u16
/// question name type:u16 class:u16          name: labels (length:u8 bytes), then 0
/// answer   pointer(0xC00C) type class ttl:u32 rdlength:u16 rdata
/// ```
///
/// A query must be a standard query (opcode 0, QR clear) with exactly one question;
/// additional records (EDNS OPT, which dig sends) are allowed and skipped. Names are
/// limited to 255 bytes and labels to 63; compression pointers in a question are
/// refused. Every refusal names its reason (`DNSError`) and is answered FORMERR when
/// the header could be read.
struct DNSQuery: Equatable, Sendable {
    var id: UInt16
    /// Lower-cased, without the trailing dot: `orders.default.mesh`.
    var name: String
    var type: UInt16
    var recursionDesired: Bool
    /// The question's bytes as received (name, type, class), echoed in the answer.
    var question: [UInt8]

    static let typeA: UInt16 = 1
    static let typeAAAA: UInt16 = 28

    init(parsing bytes: [UInt8]) throws(DNSError) {
        guard bytes.count >= 12 else { throw DNSError(.truncated, "a header is 12 bytes, got \(bytes.count)") }
        func u16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1]) }
        id = u16(0)
        let flags = u16(2)
        guard flags & 0x8000 == 0 else { throw DNSError(.notAQuery, "QR is set") }
        guard (flags >> 11) & 0xF == 0 else { throw DNSError(.notAQuery, "opcode \((flags >> 11) & 0xF)") }
        recursionDesired = flags & 0x0100 != 0
        guard u16(4) == 1 else { throw DNSError(.malformed, "\(u16(4)) questions (one expected)") }
        guard u16(6) == 0, u16(8) == 0 else { throw DNSError(.malformed, "answers in a query") }
        var offset = 12
        var labels: [String] = []
        var length = 0
        while true {
            guard offset < bytes.count else { throw DNSError(.truncated, "name runs past the message") }
            let size = Int(bytes[offset])
            offset += 1
            if size == 0 { break }
            guard size & 0xC0 == 0 else { throw DNSError(.malformed, "a compression pointer in the question") }
            guard size <= 63 else { throw DNSError(.malformed, "a label of \(size) bytes") }
            guard offset + size <= bytes.count else { throw DNSError(.truncated, "label runs past the message") }
            // `orders\.secns.mesh` carries a label with a dot in it: joined into a name,
            // it would read as two labels, another service's.
            guard !bytes[offset..<offset + size].contains(UInt8(ascii: ".")) else {
                throw DNSError(.malformed, "a '.' inside a label")
            }
            length += size + 1
            guard length <= 255 else { throw DNSError(.malformed, "a name longer than 255 bytes") }
            labels.append(String(decoding: bytes[offset..<offset + size], as: UTF8.self).lowercased())
            offset += size
        }
        guard offset + 4 <= bytes.count else { throw DNSError(.truncated, "no type and class") }
        type = u16(offset)
        let qclass = u16(offset + 2)
        guard qclass == 1 else { throw DNSError(.malformed, "class \(qclass) (only IN)") }
        question = Array(bytes[12..<offset + 4])
        name = labels.joined(separator: ".")
    }

    /// The answer: `addresses` (4 or 16 bytes each) as A or AAAA records, or an empty
    /// answer with `rcode` (3: NXDOMAIN; 0 with no records: NODATA).
    func answer(addresses: [[UInt8]], ttl: UInt32, rcode: UInt8 = 0) -> [UInt8] {
        var out: [UInt8] = []
        func u16(_ value: UInt16) { out += [UInt8(value >> 8), UInt8(value & 0xFF)] }
        u16(id)
        // QR, opcode 0, AA (we are the authority for the mesh zone), RD echoed, RA.
        u16(0x8400 | (recursionDesired ? 0x0100 : 0) | 0x0080 | UInt16(rcode & 0xF))
        u16(1)
        u16(UInt16(addresses.count))
        u16(0)
        u16(0)
        out += question
        for address in addresses {
            u16(0xC00C)  // the question's name
            u16(address.count == 16 ? Self.typeAAAA : Self.typeA)
            u16(1)
            out += [UInt8(ttl >> 24), UInt8(ttl >> 16 & 0xFF), UInt8(ttl >> 8 & 0xFF), UInt8(ttl & 0xFF)]
            u16(UInt16(address.count))
            out += address
        }
        return out
    }

    /// FORMERR for a message whose header could be read (nil otherwise: dropped).
    static func formatError(for bytes: [UInt8]) -> [UInt8]? {
        guard bytes.count >= 12 else { return nil }
        return [bytes[0], bytes[1], 0x80, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]
    }
}

/// Why a DNS message was refused (counted by reason).
struct DNSError: Error, Equatable, Sendable, CustomStringConvertible {
    enum Code: String, Sendable, CaseIterable {
        case truncated
        case malformed
        case notAQuery = "not_a_query"
    }

    let code: Code
    let reason: String

    init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    var description: String { "\(code.rawValue): \(reason)" }
}
