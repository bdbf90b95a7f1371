import CNetfilter

#if canImport(Glibc)
    import Glibc
#endif

/// A NETLINK_NETFILTER socket (libmnl), used for one batch or one dump and closed.
final class NetlinkSocket {
    private let socket: OpaquePointer
    private let portID: UInt32
    /// Large enough for a full dump datagram of rules.
    private static let receiveBufferSize = 64 * 1024

    init() throws(NetfilterError) {
        guard let socket = mnl_socket_open(NETLINK_NETFILTER) else {
            throw NetfilterError(operation: "open a netlink socket", errno: errno)
        }
        guard mnl_socket_bind(socket, 0, pid_t(MNL_SOCKET_AUTOPID)) == 0 else {
            let code = errno
            mnl_socket_close(socket)
            throw NetfilterError(operation: "bind the netlink socket", errno: code)
        }
        self.socket = socket
        self.portID = mnl_socket_get_portid(socket)
        // A kernel that never answers must not hang `capture install`.
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        _ = setsockopt(
            mnl_socket_get_fd(socket),
            SOL_SOCKET,
            SO_RCVTIMEO,
            &timeout,
            socklen_t(MemoryLayout<timeval>.size)
        )
    }

    deinit {
        mnl_socket_close(socket)
    }

    func send(_ bytes: UnsafeRawBufferPointer, operation: String) throws(NetfilterError) {
        guard mnl_socket_sendto(socket, bytes.baseAddress, bytes.count) == bytes.count else {
            throw NetfilterError(operation: operation, errno: errno)
        }
    }

    /// Receives until every sequence number in `pending` is acknowledged; throws for
    /// the first request the kernel refused, naming its object.
    func awaitAcknowledgements(_ pending: [UInt32: String]) throws(NetfilterError) {
        var waiting = pending
        var failure: NetfilterError?
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.receiveBufferSize, alignment: 8)
        defer { buffer.deallocate() }
        while !waiting.isEmpty {
            let received = mnl_socket_recvfrom(socket, buffer.baseAddress, buffer.count)
            if received < 0 {
                if let failure { throw failure }
                let first = waiting.keys.min().flatMap { waiting[$0] } ?? "the batch"
                throw NetfilterError(operation: "waiting for the kernel to answer \(first)", errno: errno)
            }
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<received])
            guard let messages = NetlinkMessage.split(bytes) else {
                throw NetfilterError(operation: "read the kernel's answer (malformed netlink message)", errno: EPROTO)
            }
            for message in messages {
                guard let (code, sequence) = message.acknowledgement(in: bytes) else { continue }
                guard let object = waiting.removeValue(forKey: sequence) else { continue }
                if code != 0, failure == nil {
                    failure = NetfilterError(operation: object, errno: code)
                }
            }
            // After a refusal the kernel aborts the whole batch; later requests may
            // not all be answered.
            if let failure { throw failure }
        }
    }

    /// Sends a get or dump request and returns each reply message (header included)
    /// until NLMSG_DONE or the acknowledgement; an error reply becomes a thrown `NetfilterError`.
    func dump(_ request: UnsafeRawBufferPointer, operation: String) throws(NetfilterError) -> [[UInt8]] {
        try send(request, operation: operation)
        var replies: [[UInt8]] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.receiveBufferSize, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            let received = mnl_socket_recvfrom(socket, buffer.baseAddress, buffer.count)
            guard received >= 0 else { throw NetfilterError(operation: operation, errno: errno) }
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<received])
            guard let messages = NetlinkMessage.split(bytes) else {
                throw NetfilterError(operation: "\(operation) (malformed netlink message)", errno: EPROTO)
            }
            for message in messages {
                if message.type == NetlinkMessage.done { return replies }
                if let (code, _) = message.acknowledgement(in: bytes) {
                    // A plain (non-dump) get ends with its acknowledgement.
                    if code != 0 { throw NetfilterError(operation: operation, errno: code) }
                    return replies
                }
                replies.append(Array(bytes[message.offset..<(message.offset + message.length)]))
            }
        }
    }
}
