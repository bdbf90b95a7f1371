import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A plain blocking TCP client socket: the "application" side of tests, deliberately
/// not NIO so that the code under test is the only event-driven party.
public final class BlockingSocket: @unchecked Sendable {  // one fd; callers do not share a direction across threads
    public let fd: Int32

    /// Connects, or throws having closed its descriptor. `fd` is assigned only on
    /// success: a class whose initializer throws after initializing every stored property
    /// still runs `deinit`, which would close the descriptor a second time, possibly
    /// after another socket in this process has been given the same number.
    public init(port: Int, host: String = "127.0.0.1", source: String? = nil, timeoutSeconds: Int = 30) throws {
        let descriptor = try Self.open(AF_INET, timeoutSeconds: timeoutSeconds)
        if let source {
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, source, &local.sin_addr)
            try Self.address(descriptor, &local, "bind \(source)") { bind($0, $1, $2) }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &address.sin_addr)
        try Self.address(descriptor, &address, "connect \(host):\(port)") { connect($0, $1, $2) }
        fd = descriptor
    }

    /// Connects to a unix socket, or throws having closed its descriptor.
    public init(unixPath path: String, timeoutSeconds: Int = 30) throws {
        let descriptor = try Self.open(AF_UNIX, timeoutSeconds: timeoutSeconds)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(descriptor)
            throw SocketError("\(path): too long for a socket path")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        try Self.address(descriptor, &address, "connect \(path)") { connect($0, $1, $2) }
        fd = descriptor
    }

    /// A stream socket of `domain` whose reads and writes give up after `timeoutSeconds`.
    private static func open(_ domain: Int32, timeoutSeconds: Int) throws -> Int32 {
        let descriptor = socket(domain, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw SocketError("socket: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return descriptor
    }

    /// `call` (bind or connect) with `address`; on failure the descriptor is closed and
    /// the error names `what`.
    private static func address<Address>(
        _ descriptor: Int32,
        _ address: inout Address,
        _ what: String,
        _ call: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32
    ) throws {
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                call(descriptor, $0, socklen_t(MemoryLayout<Address>.size))
            }
        }
        guard result == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw SocketError("\(what): \(reason)")
        }
    }

    /// One read of at most `count` bytes (empty: the peer closed).
    public func receive(atMost count: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        let received = try buffer.withUnsafeMutableBytes { try receive(into: $0) }
        return Array(buffer.prefix(received))
    }

    public func send(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                throw SocketError("send: \(String(cString: strerror(errno)))")
            }
            offset += n
        }
    }

    public func send(_ string: String) throws {
        try Array(string.utf8).withUnsafeBytes { try send($0) }
    }

    /// Reads up to `buffer.count` bytes; 0 means end of stream.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n < 0 {
                if errno == EINTR { continue }
                throw SocketError("recv: \(String(cString: strerror(errno)))")
            }
            return n
        }
    }

    /// Reads until end of stream.
    public func receiveAll(limit: Int = 16 << 20) throws -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while result.count < limit {
            let n = try chunk.withUnsafeMutableBytes { try receive(into: $0) }
            if n == 0 { break }
            result.append(contentsOf: chunk[0..<n])
        }
        return result
    }

    /// Reads exactly `count` bytes (fewer only if the stream ends).
    public func receive(exactly count: Int) throws -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = try result.withUnsafeMutableBytes {
                try receive(into: UnsafeMutableRawBufferPointer(rebasing: $0[got...]))
            }
            if n == 0 { break }
            got += n
        }
        return Array(result[0..<got])
    }

    /// Sends `message` and reads back as many bytes as it has: one exchange with an
    /// echoing peer. Returns what came back (shorter only if the stream ended).
    public func roundTrip(_ message: String) throws -> String {
        try send(message)
        return String(decoding: try receive(exactly: message.utf8.count), as: UTF8.self)
    }

    public func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    deinit { close(fd) }
}

public struct SocketError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Raises the open-file limit to the hard limit (tests with 1,000 connections need
/// about 6,000 descriptors in this one process).
public func raiseOpenFileLimit() {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    limit.rlim_cur = limit.rlim_max
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}
