#if canImport(Glibc)
    import Glibc
#endif

/// Bytes for a non-blocking socket that it has not taken yet.
///
/// Storage is allocated only while bytes wait and released as soon as the socket has
/// taken them all, so an idle connection holds none. Not thread-safe.
public struct SendQueue: ~Copyable {
    private var storage: UnsafeMutableRawBufferPointer?
    private var start = 0
    private var end = 0

    /// What a `send` to the socket achieved.
    public enum Outcome: Equatable, Sendable {
        /// Every queued byte was taken.
        case empty
        /// The socket is full; bytes still wait.
        case wouldBlock
        /// The peer reset the connection (ECONNRESET, EPIPE).
        case reset
        /// Any other failure, with `errno`.
        case failed(CInt)
    }

    public init() {}

    deinit {
        storage?.deallocate()
    }

    /// Bytes waiting.
    public var count: Int { end - start }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        if storage == nil || storage!.count < end + bytes.count {
            let grown = UnsafeMutableRawBufferPointer.allocate(
                byteCount: max(count + bytes.count, 2 * (storage?.count ?? 0), 4096),
                alignment: 16
            )
            if let storage {
                grown.baseAddress!.copyMemory(from: storage.baseAddress! + start, byteCount: count)
                storage.deallocate()
            }
            end = count
            start = 0
            storage = grown
        }
        (storage!.baseAddress! + end).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        end += bytes.count
    }

    /// Sends `bytes` after those already waiting, straight from the caller's memory
    /// when none wait; what the socket does not take is queued.
    public mutating func send(_ bytes: UnsafeRawBufferPointer, to socket: CInt) -> Outcome {
        guard count == 0 else {
            append(bytes)
            return send(to: socket)
        }
        let (sent, outcome) = Self.send(bytes, to: socket)
        if outcome == .wouldBlock { append(UnsafeRawBufferPointer(rebasing: bytes[sent...])) }
        return outcome
    }

    /// Sends queued bytes to `socket` until they are all taken or the socket is full.
    public mutating func send(to socket: CInt) -> Outcome {
        guard let storage, end > start else { return .empty }
        let (sent, outcome) = Self.send(UnsafeRawBufferPointer(rebasing: storage[start..<end]), to: socket)
        start += sent
        if start == end {
            storage.deallocate()
            self.storage = nil
            start = 0
            end = 0
        }
        return outcome
    }

    /// One `send` after another until `bytes` are all taken, the socket is full or it
    /// fails: how many were taken, and why it stopped.
    private static func send(_ bytes: UnsafeRawBufferPointer, to socket: CInt) -> (Int, Outcome) {
        var sent = 0
        while sent < bytes.count {
            let n = Glibc.send(socket, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
            if n > 0 {
                sent += n
                continue
            }
            let error = errno
            switch error {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return (sent, .wouldBlock)
            case ECONNRESET, EPIPE: return (sent, .reset)
            default: return (sent, .failed(error))
            }
        }
        return (sent, .empty)
    }
}
