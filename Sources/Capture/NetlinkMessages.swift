/// Netlink framing, parsed from raw bytes: the kernel's answers to a batch (one
/// acknowledgement or error per request) and the messages of a dump.
///
/// Pure: no sockets. `struct nlmsghdr` is 16 bytes (length, type, flags, sequence,
/// port id, host byte order); messages are padded to 4 bytes.
struct NetlinkMessage: Equatable {
    static let headerSize = 16
    static let error: UInt16 = 2  // NLMSG_ERROR
    static let done: UInt16 = 3  // NLMSG_DONE

    var type: UInt16
    var flags: UInt16
    var sequence: UInt32
    /// Offset of the header within the parsed bytes (libnftnl parses from the header).
    var offset: Int
    var length: Int

    /// For NLMSG_ERROR: the (negative) errno, zero for an acknowledgement, and the
    /// sequence number of the request it answers.
    func acknowledgement(in bytes: UnsafeRawBufferPointer) -> (errno: Int32, sequence: UInt32)? {
        guard type == Self.error, length >= Self.headerSize + 4 + Self.headerSize else { return nil }
        let code = bytes.loadUnaligned(fromByteOffset: offset + Self.headerSize, as: Int32.self)
        let request = bytes.loadUnaligned(fromByteOffset: offset + Self.headerSize + 4 + 8, as: UInt32.self)
        return (-code, request)
    }

    /// Splits a datagram into messages; nil when a length field is inconsistent.
    static func split(_ bytes: UnsafeRawBufferPointer) -> [NetlinkMessage]? {
        var messages: [NetlinkMessage] = []
        var offset = 0
        while bytes.count - offset >= headerSize {
            let length = Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            guard length >= headerSize, length <= bytes.count - offset else { return nil }
            messages.append(
                NetlinkMessage(
                    type: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self),
                    flags: bytes.loadUnaligned(fromByteOffset: offset + 6, as: UInt16.self),
                    sequence: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self),
                    offset: offset,
                    length: length
                )
            )
            offset += (length + 3) & ~3
        }
        return offset >= bytes.count ? messages : nil
    }
}

/// nftables user data (`NFTNL_RULE_USERDATA`): type-length-value records; type 0 is
/// the rule's comment, as `nft` writes and shows it.
enum RuleUserData {
    static let commentType: UInt8 = 0

    static func encode(comment: String) -> [UInt8] {
        let value = Array(comment.utf8.prefix(250)) + [0]
        return [commentType, UInt8(value.count)] + value
    }

    static func comment(in bytes: [UInt8]) -> String? {
        var index = 0
        while index + 2 <= bytes.count {
            let type = bytes[index]
            let length = Int(bytes[index + 1])
            guard index + 2 + length <= bytes.count else { return nil }
            if type == commentType {
                let value = bytes[(index + 2)..<(index + 2 + length)].prefix { $0 != 0 }
                return String(decoding: value, as: UTF8.self)
            }
            index += 2 + length
        }
        return nil
    }
}
