import COpenSSL
import MeshIdentity
import MeshNet

#if canImport(Glibc)
    import Glibc
#endif

/// An established mutual-TLS connection that reads and writes its socket itself.
///
/// `MeshTLSHandler.detach(socket:)` moves a connection here once its handshake is done,
/// so that a relay can run it without a channel pipeline (see the proxy's direct relay).
/// OpenSSL reads the socket directly, with read-ahead, so a burst of records costs one
/// `read`; ciphertext is gathered in an output queue and sent with one `send` per
/// `write` call, whatever the number of records. Non-blocking throughout: every call
/// returns at once with what it could do. Not thread-safe: one thread drives it.
///
/// The stream does not own the socket: the caller closes it after releasing the stream.
public final class TLSSocketStream {
    /// What one call achieved.
    public enum Step: Equatable, Sendable {
        /// `count` bytes were read (plaintext), or handed over for sending.
        case bytes(Int)
        /// Nothing can happen until the socket is readable (or, after a write, writable) again.
        case wouldBlock
        /// The peer sent close_notify: its direction ended cleanly.
        case closed
        /// The peer's TCP connection ended without close_notify (a truncation attack,
        /// or a peer that died): never to be taken as a clean end.
        case truncated
        /// The peer reset the connection (ECONNRESET, EPIPE).
        case reset
        case failed(String)
    }

    private let connection: TLSConnection
    private let socket: SocketBIO
    /// A read that ended after some plaintext was returned: reported on the next call.
    private var deferredEnd: Step?

    /// The file descriptor this stream reads and writes.
    public var fileDescriptor: CInt { socket.fd }

    init(connection: TLSConnection, fd: CInt) {
        self.connection = connection
        self.socket = SocketBIO(fd: fd)
        // SSL_set_bio frees the channel's BIO (OpenSSL held its only reference).
        SSL_set_bio(connection.ssl, socket.bio, socket.bio)
        SSL_set_read_ahead(connection.ssl, 1)
    }

    /// Whether the last `read` found the socket empty (its own read of the socket came
    /// back short or would block) and OpenSSL holds no undelivered bytes: with an
    /// edge-triggered poller, reading again before the socket reports readable would
    /// only return `wouldBlock`. A read served from OpenSSL's buffer alone never says
    /// drained, since the socket may have filled since it was last read.
    public var isDrained: Bool {
        deferredEnd == nil && socket.drained && SSL_has_pending(connection.ssl) == 0
    }

    /// Ciphertext queued and not yet taken by the socket.
    public var queuedOutput: Int { socket.queued }

    /// Decrypts into `buffer`: as many records as fit and have arrived.
    public func read(into buffer: UnsafeMutableRawBufferPointer) -> Step {
        if let deferredEnd { return deferredEnd }
        socket.drained = false
        // Reading can make OpenSSL answer (a TLS 1.3 key update): send that at once.
        defer { if socket.queued > 0 { _ = flush() } }
        var filled = 0
        ERR_clear_error()
        while filled < buffer.count {
            let room = Int32(min(buffer.count - filled, Int(Int32.max)))
            let n = SSL_read(connection.ssl, buffer.baseAddress! + filled, room)
            if n > 0 {
                filled += Int(n)
                if isDrained { break }
                continue
            }
            let end = classifyRead(SSL_get_error(connection.ssl, n))
            if filled == 0 { return end }
            if end != .wouldBlock { deferredEnd = end }
            break
        }
        return .bytes(filled)
    }

    private func classifyRead(_ error: Int32) -> Step {
        switch error {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            // Writes never block in the BIO (they queue), so WANT_WRITE does not happen.
            return .wouldBlock
        case SSL_ERROR_ZERO_RETURN:
            return .closed
        case SSL_ERROR_SYSCALL where socket.lastErrno == ECONNRESET || socket.lastErrno == EPIPE:
            ERR_clear_error()
            return .reset
        default:
            let packed = ERR_peek_error()
            if ERR_GET_LIB(packed) == ERR_LIB_SSL && ERR_GET_REASON(packed) == SSL_R_UNEXPECTED_EOF_WHILE_READING {
                ERR_clear_error()
                return .truncated
            }
            if error == SSL_ERROR_SYSCALL && socket.lastErrno == 0 {
                return .truncated
            }
            return .failed(OpenSSLErrorQueue.drain(or: "SSL_read error \(error), errno \(socket.lastErrno)"))
        }
    }

    /// Encrypts all of `bytes` into the output queue, then sends what the socket takes.
    /// `.bytes(count)`: all of it is on the wire; `.wouldBlock`: all of it was taken but
    /// part waits in the queue for the socket to become writable (call `flush`).
    public func write(_ bytes: UnsafeRawBufferPointer) -> Step {
        guard bytes.count > 0 else { return flush() }
        ERR_clear_error()
        let n = SSL_write(connection.ssl, bytes.baseAddress, Int32(min(bytes.count, Int(Int32.max))))
        guard n == Int32(bytes.count) else {
            // The BIO queues everything, so only a broken connection gets here.
            return .failed(OpenSSLErrorQueue.drain(or: "SSL_write error \(SSL_get_error(connection.ssl, n))"))
        }
        switch flush() {
        case .bytes: return .bytes(bytes.count)
        case let other: return other
        }
    }

    /// Sends queued ciphertext: `.bytes(0)` once the queue is empty.
    public func flush() -> Step {
        socket.flush()
    }

    /// Queues close_notify (once) and sends it (TLS 1.3 half-close: reading goes on).
    /// The caller shuts the socket's write side once `queuedOutput` is zero.
    public func closeOutput() -> Step {
        if !sentCloseNotify {
            sentCloseNotify = true
            ERR_clear_error()
            _ = SSL_shutdown(connection.ssl)
            ERR_clear_error()
        }
        return flush()
    }

    private var sentCloseNotify = false
}

/// The BIO under a `TLSSocketStream`: reads go straight to the socket (with OpenSSL's
/// read-ahead, as much as its record buffer holds), writes gather in a queue that
/// `flush` sends in one call. The queue is released whenever it empties, so an idle
/// connection holds none.
private final class SocketBIO: SwiftBIO {
    let fd: CInt
    /// The last read found the socket empty (EAGAIN, or fewer bytes than asked for).
    var drained = false
    /// errno of the last failed socket call; 0 for end of file.
    var lastErrno: CInt = 0
    private var queue = SendQueue()

    var queued: Int { queue.count }

    init(fd: CInt) {
        self.fd = fd
        super.init()
    }

    override func bioRead(into destination: UnsafeMutablePointer<CChar>, count: Int) -> Int32 {
        var n = Glibc.read(fd, destination, count)
        while n < 0 && errno == EINTR { n = Glibc.read(fd, destination, count) }
        if n > 0 {
            drained = n < count
            return Int32(n)
        }
        if n == 0 {
            lastErrno = 0
            drained = true
            return 0
        }
        lastErrno = errno
        if lastErrno == EAGAIN || lastErrno == EWOULDBLOCK {
            drained = true
            beemesh_BIO_set_retry_read(bio)
        }
        return -1
    }

    override func bioWrite(from source: UnsafePointer<CChar>, count: Int) -> Int32 {
        queue.append(UnsafeRawBufferPointer(start: source, count: count))
        return Int32(count)
    }

    func flush() -> TLSSocketStream.Step {
        switch queue.send(to: fd) {
        case .empty: return .bytes(0)
        case .wouldBlock: return .wouldBlock
        case .reset:
            lastErrno = ECONNRESET
            return .reset
        case .failed(let error):
            lastErrno = error
            return .failed("send: \(String(cString: strerror(error)))")
        }
    }
}
