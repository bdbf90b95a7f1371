import Foundation
import MeshConfiguration
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// Clients that each keep one request in flight on one connection, for a fixed time,
/// recording every latency: the same load for BeeMesh's workload API (HTTP/1.1) and for
/// etcd's gRPC API (HTTP/2, written by hand: literal HPACK headers, one stream per
/// request), so that neither side pays for a gateway.
struct LoadGenerator: Sendable {
    enum System { case beemesh, etcd }

    struct Result: Codable {
        var clients: Int
        var operations: Int
        var errors: Int
        var seconds: Double
        var perSecond: Double
        var p50Milliseconds: Double
        var p99Milliseconds: Double
    }

    let system: System
    let target: HostPort
    let clients: Int
    let seconds: Double
    let reads: Bool

    func run() throws -> Result {
        let collected = NIOLockedValueBox((latencies: [Double](), errors: 0, failure: (any Error)?.none))
        let group = DispatchGroup()
        let start = Date()
        let deadline = start.addingTimeInterval(seconds)
        for client in 0..<clients {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                do {
                    let (mine, failed) = try self.client(client, until: deadline)
                    collected.withLockedValue {
                        $0.latencies += mine
                        $0.errors += failed
                    }
                } catch {
                    collected.withLockedValue { $0.failure = error }
                }
            }
        }
        group.wait()
        let (unsorted, errors, failure) = collected.withLockedValue { $0 }
        if let failure { throw failure }
        let elapsed = Date().timeIntervalSince(start)
        let latencies = unsorted.sorted()
        func percentile(_ q: Double) -> Double {
            latencies.isEmpty ? .nan : latencies[min(latencies.count - 1, Int(q * Double(latencies.count)))]
        }
        return Result(
            clients: clients,
            operations: latencies.count,
            errors: errors,
            seconds: elapsed,
            perSecond: Double(latencies.count) / elapsed,
            p50Milliseconds: percentile(0.5),
            p99Milliseconds: percentile(0.99)
        )
    }

    /// One client's latencies (milliseconds) of successful requests, and its failures.
    private func client(_ number: Int, until deadline: Date) throws -> ([Double], Int) {
        let connection = try BlockingConnection(target)
        var etcd: GRPCConnection?
        if system == .etcd { etcd = try GRPCConnection(connection, authority: target.description) }
        let value = [UInt8](repeating: UInt8(ascii: "v"), count: 256)
        var latencies: [Double] = []
        latencies.reserveCapacity(100_000)
        var errors = 0
        var sequence = 0
        while Date() < deadline {
            let key = "c\(number)-\(sequence % 1000)"
            sequence += 1
            let started = DispatchTime.now().uptimeNanoseconds
            let ok: Bool
            switch (system, reads) {
            case (.beemesh, false):
                ok = try HTTP1.request(connection, "PUT", "/v1/kv/\(key)", body: value) == 200
            case (.beemesh, true):
                let status = try HTTP1.request(connection, "GET", "/v1/kv/\(key)", body: [])
                ok = status == 200 || status == 404
            case (.etcd, false):
                ok = try etcd!.call(
                    "/etcdserverpb.KV/Put",
                    Protobuf.bytes(1, Array(key.utf8)) + Protobuf.bytes(2, value)
                )
            case (.etcd, true):
                ok = try etcd!.call("/etcdserverpb.KV/Range", Protobuf.bytes(1, Array(key.utf8)))
            }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
            if ok { latencies.append(elapsed) } else { errors += 1 }
        }
        return (latencies, errors)
    }
}

struct LoadError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A TCP connection with blocking reads and writes and a read buffer.
final class BlockingConnection {
    private let fd: Int32
    private var buffer: [UInt8] = []
    private var position = 0

    init(_ target: HostPort) throws {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(target.port).bigEndian)
        guard inet_pton(AF_INET, target.host, &address.sin_addr) == 1 else {
            throw LoadError("\(target.host) is not an IPv4 address")
        }
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else {
            close(fd)
            throw LoadError("cannot connect to \(target): \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(fd) }

    func write(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let count = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { throw LoadError("send: \(String(cString: strerror(errno)))") }
            sent += count
        }
    }

    /// Exactly `count` bytes.
    func read(_ count: Int) throws -> [UInt8] {
        while buffer.count - position < count { try fill() }
        defer { position += count }
        return Array(buffer[position..<position + count])
    }

    /// Up to and including "\r\n\r\n".
    func readHead() throws -> [UInt8] {
        while true {
            if let end = find([13, 10, 13, 10]) {
                defer { position = end }
                return Array(buffer[position..<end])
            }
            try fill()
        }
    }

    private func find(_ pattern: [UInt8]) -> Int? {
        guard buffer.count - position >= pattern.count else { return nil }
        for start in position...(buffer.count - pattern.count)
        where buffer[start..<start + pattern.count].elementsEqual(pattern) {
            return start + pattern.count
        }
        return nil
    }

    private func fill() throws {
        if position > 0 {
            buffer.removeFirst(position)
            position = 0
        }
        var chunk = [UInt8](repeating: 0, count: 65536)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { throw LoadError("the server closed the connection") }
        buffer += chunk[0..<count]
    }
}

/// HTTP/1.1 keep-alive requests whose answers carry a content-length.
enum HTTP1 {
    static func request(_ connection: BlockingConnection, _ method: String, _ path: String, body: [UInt8]) throws -> Int
    {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: bench\r\n"
        if !body.isEmpty || method == "PUT" { head += "Content-Length: \(body.count)\r\n" }
        try connection.write(Array((head + "\r\n").utf8) + body)
        let text = String(decoding: try connection.readHead(), as: UTF8.self)
        let lines = text.split(separator: "\r\n")
        guard let status = lines.first?.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw LoadError("not an HTTP answer: \(text)")
        }
        let length =
            lines.dropFirst().compactMap { line -> Int? in
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, parts[0].lowercased() == "content-length" else { return nil }
                return Int(parts[1].trimmingCharacters(in: .whitespaces))
            }.first ?? 0
        _ = try connection.read(length)
        return status
    }
}

/// The two protobuf fields the load needs: length-delimited bytes.
enum Protobuf {
    static func varint(_ value: Int) -> [UInt8] {
        var value = UInt64(value)
        var bytes: [UInt8] = []
        repeat {
            bytes.append(UInt8(value & 0x7F) | (value > 0x7F ? 0x80 : 0))
            value >>= 7
        } while value > 0
        return bytes
    }

    static func bytes(_ field: Int, _ value: [UInt8]) -> [UInt8] {
        varint(field << 3 | 2) + varint(value.count) + value
    }
}

/// gRPC unary calls over one HTTP/2 connection, one stream at a time. A call succeeds
/// when a response message arrives before its stream ends (an error has trailers only).
final class GRPCConnection {
    private let connection: BlockingConnection
    private let authority: String
    private var nextStream: UInt32 = 1

    init(_ connection: BlockingConnection, authority: String) throws {
        self.connection = connection
        self.authority = authority
        // The preface, our settings (none), and a connection window large enough that
        // answers never wait for our updates.
        try connection.write(
            Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + Self.frame(type: 4, flags: 0, stream: 0, [])
        )
        try connection.write(Self.frame(type: 8, flags: 0, stream: 0, Self.u32(1 << 30)))
    }

    func call(_ path: String, _ message: [UInt8]) throws -> Bool {
        let stream = nextStream
        nextStream += 2
        var block: [UInt8] = []
        for (name, value) in [
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ] {
            block += [0x00] + Self.hpackString(name) + Self.hpackString(value)
        }
        let body = [0] + Self.u32(UInt32(message.count)) + message
        try connection.write(
            Self.frame(type: 1, flags: 0x4, stream: stream, block)
                + Self.frame(type: 0, flags: 0x1, stream: stream, body)
        )
        var answered = false
        while true {
            let header = try connection.read(9)
            let length = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
            let (type, flags) = (header[3], header[4])
            let id =
                (UInt32(header[5]) << 24 | UInt32(header[6]) << 16 | UInt32(header[7]) << 8 | UInt32(header[8]))
                & 0x7FFF_FFFF
            let payload = try connection.read(length)
            switch type {
            case 4 where flags & 1 == 0:
                try connection.write(Self.frame(type: 4, flags: 1, stream: 0, []))
            case 6 where flags & 1 == 0:
                try connection.write(Self.frame(type: 6, flags: 1, stream: 0, payload))
            case 7:
                throw LoadError("the server sent GOAWAY")
            case 3 where id == stream:
                return false
            case 0 where id == stream:
                if !payload.isEmpty { answered = true }
                if flags & 1 != 0 { return answered }
            case 1 where id == stream:
                if flags & 1 != 0 { return answered }
            default:
                break
            }
        }
    }

    static func frame(type: UInt8, flags: UInt8, stream: UInt32, _ payload: [UInt8]) -> [UInt8] {
        let length = payload.count
        return [UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), type, flags]
            + u32(stream) + payload
    }

    static func u32(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24 & 0xFF), UInt8(value >> 16 & 0xFF), UInt8(value >> 8 & 0xFF), UInt8(value & 0xFF)]
    }

    /// A string literal, not Huffman-coded (RFC 7541 section 5.2).
    static func hpackString(_ text: String) -> [UInt8] {
        let bytes = Array(text.utf8)
        var length: [UInt8]
        if bytes.count < 127 {
            length = [UInt8(bytes.count)]
        } else {
            length = [127]
            var rest = bytes.count - 127
            while rest >= 128 {
                length.append(UInt8(rest & 0x7F) | 0x80)
                rest >>= 7
            }
            length.append(UInt8(rest))
        }
        return length + bytes
    }
}
