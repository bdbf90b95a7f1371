import CNetfilter

#if canImport(Glibc)
    import Glibc
#endif

/// One nftables transaction under construction: netlink messages built by libnftnl
/// into a libmnl batch, framed by BATCH_BEGIN and BATCH_END. The kernel applies all of
/// it or none of it. Every request asks for an acknowledgement; `pending` maps its
/// sequence number to a description of the object, for error messages.
final class NetfilterBatch {
    private let storage: UnsafeMutableRawPointer
    private let batch: OpaquePointer
    private var sequence: UInt32
    private(set) var pending: [UInt32: String] = [:]
    private var overflowed = false

    static let family = netfilterU16(NFPROTO_INET)

    init(capacity: Int = 1 << 20) {
        storage = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 8)
        batch = mnl_nlmsg_batch_start(storage, capacity)
        sequence = UInt32(truncatingIfNeeded: time(nil))
        nftnl_batch_begin(mnl_nlmsg_batch_current(batch).assumingMemoryBound(to: CChar.self), nextSequence())
        advance()
    }

    deinit {
        mnl_nlmsg_batch_stop(batch)
        storage.deallocate()
    }

    private func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    private func advance() {
        if !mnl_nlmsg_batch_next(batch) { overflowed = true }
    }

    /// Appends one request; `build` writes its payload after the header.
    func add(
        _ type: nf_tables_msg_types,
        flags: Int32,
        object: String,
        build: (UnsafeMutablePointer<nlmsghdr>) -> Void
    ) {
        let number = nextSequence()
        let header = nftnl_nlmsg_build_hdr(
            mnl_nlmsg_batch_current(batch).assumingMemoryBound(to: CChar.self),
            netfilterU16(type),
            Self.family,
            UInt16(flags | NLM_F_ACK),
            number
        )!
        build(header)
        pending[number] = object
        advance()
    }

    /// Closes the batch; the bytes stay valid while the batch lives.
    func finish() throws(NetfilterError) -> UnsafeRawBufferPointer {
        nftnl_batch_end(mnl_nlmsg_batch_current(batch).assumingMemoryBound(to: CChar.self), nextSequence())
        advance()
        guard !overflowed else {
            throw NetfilterError(operation: "build the batch (rule set larger than its buffer)", errno: ENOBUFS)
        }
        return UnsafeRawBufferPointer(start: mnl_nlmsg_batch_head(batch), count: mnl_nlmsg_batch_size(batch))
    }
}

// Kernel and libnftnl constants arrive in Swift either as imported C enums or as plain
// integers (anonymous enums); these accept both.
@inline(__always) func netfilterU16<T: BinaryInteger>(_ value: T) -> UInt16 { UInt16(value) }
@inline(__always) func netfilterU16<T: RawRepresentable>(_ value: T) -> UInt16 where T.RawValue: BinaryInteger {
    UInt16(value.rawValue)
}
@inline(__always) func netfilterU32<T: BinaryInteger>(_ value: T) -> UInt32 { UInt32(value) }
@inline(__always) func netfilterU32<T: RawRepresentable>(_ value: T) -> UInt32 where T.RawValue: BinaryInteger {
    UInt32(value.rawValue)
}
@inline(__always) func netfilterI64<T: BinaryInteger>(_ value: T) -> Int64 { Int64(value) }
@inline(__always) func netfilterI64<T: RawRepresentable>(_ value: T) -> Int64 where T.RawValue: BinaryInteger {
    Int64(value.rawValue)
}
