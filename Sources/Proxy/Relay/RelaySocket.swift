import CLinux
import MeshNet
import MeshTLS

#if canImport(Glibc)
    import Glibc
#endif

/// A socket a direct relay owns: plain TCP, or TLS through a `TLSSocketStream`.
/// The descriptor is the relay's own (a duplicate of the channel's), closed by `close`.
final class RelaySocket: RelayStream {
    let fd: CInt
    private var tls: TLSSocketStream?
    /// Plain sockets only: bytes the socket did not take yet.
    private var queue = SendQueue()
    private var drained = false
    /// The epoll set the socket is registered with, once a loop has it.
    var poller: CInt = -1

    init(fd: CInt, tls: TLSSocketStream?) {
        self.fd = fd
        self.tls = tls
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) -> StreamStep {
        if let tls { return tls.read(into: buffer) }
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n > 0 {
                drained = n < buffer.count
                return .bytes(n)
            }
            if n == 0 { return .closed }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .wouldBlock
            case ECONNRESET, EPIPE: return .reset
            case let error: return .failed("read: \(String(cString: strerror(error)))")
            }
        }
    }

    var isDrained: Bool { tls?.isDrained ?? drained }

    func write(_ bytes: UnsafeRawBufferPointer) -> StreamStep {
        if let tls { return tls.write(bytes) }
        return step(queue.send(bytes, to: fd), sent: bytes.count)
    }

    func flush() -> StreamStep {
        if let tls { return tls.flush() }
        return step(queue.send(to: fd), sent: 0)
    }

    private func step(_ outcome: SendQueue.Outcome, sent: Int) -> StreamStep {
        switch outcome {
        case .empty: return .bytes(sent)
        case .wouldBlock: return .wouldBlock
        case .reset: return .reset
        case .failed(let error): return .failed("send: \(String(cString: strerror(error)))")
        }
    }

    var hasQueuedOutput: Bool { (tls?.queuedOutput ?? queue.count) > 0 }

    func closeOutput() -> StreamStep {
        tls?.closeOutput() ?? flush()
    }

    func shutdownWrite() {
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    func close(_ how: RelayClose) {
        if poller >= 0 { epoll_ctl(poller, EPOLL_CTL_DEL, fd, nil) }
        if how == .cut, let tls {
            // Best effort: whatever the socket takes now.
            _ = tls.closeOutput()
        }
        if how == .failed && tls == nil {
            // A TLS peer learns of the failure from the missing close_notify.
            var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
            _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        }
        tls = nil
        _ = Glibc.close(fd)
    }
}
