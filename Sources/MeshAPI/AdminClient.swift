#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// A small blocking HTTP/1.1 client for a sidecar's (and later the agent's) admin API,
/// over the unix socket or `http://host:port`: what `beectl` uses. One request per
/// connection (`connection: close`); bodies framed by length, chunks or close.
public struct AdminClient: Sendable {
    /// Where the admin API listens.
    public enum Endpoint: Sendable, Equatable, CustomStringConvertible {
        case unix(path: String)
        case tcp(host: String, port: Int)

        /// `http://127.0.0.1:15000` or a socket path.
        public init(_ text: String) throws(AdminClientError) {
            if text.hasPrefix("http://") {
                var rest = text.dropFirst("http://".count)
                if let slash = rest.firstIndex(of: "/") { rest = rest[..<slash] }
                let host: Substring
                let port: Int?
                if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
                    host = rest[rest.index(after: rest.startIndex)..<close]
                    port = rest[close...].dropFirst().hasPrefix(":") ? Int(rest[close...].dropFirst(2)) : 80
                } else if let colon = rest.lastIndex(of: ":") {
                    host = rest[..<colon]
                    port = Int(rest[rest.index(after: colon)...])
                } else {
                    host = rest
                    port = 80
                }
                guard let port, (1...65535).contains(port), !host.isEmpty else {
                    throw AdminClientError("'\(text)' is not http://host:port")
                }
                self = .tcp(host: String(host), port: port)
            } else if text.contains("://") {
                throw AdminClientError("'\(text)': only http:// URLs and socket paths are supported")
            } else {
                self = .unix(path: text)
            }
        }

        public var description: String {
            switch self {
            case .unix(let path): path
            case .tcp(let host, let port): host.contains(":") ? "http://[\(host)]:\(port)" : "http://\(host):\(port)"
            }
        }
    }

    public let endpoint: Endpoint
    /// Seconds a connect or a read may wait (nil: forever, for `follow`).
    public var timeout: Double?

    public init(endpoint: Endpoint, timeout: Double? = 10) {
        self.endpoint = endpoint
        self.timeout = timeout
    }

    /// `GET path`: the status and the whole body.
    public func get(_ path: String) throws(AdminClientError) -> (status: Int, body: [UInt8]) {
        var body: [UInt8] = []
        let status = try stream(path) { _, bytes in
            body.append(contentsOf: bytes)
            return true
        }
        return (status, body)
    }

    /// `GET path`, decoded as `T` when the status is 200; the server's error otherwise.
    public func get<T: Decodable>(_ path: String, as type: T.Type) throws(AdminClientError) -> T {
        let (status, body) = try get(path)
        guard status == 200 else { throw AdminClientError(status: status, body: body) }
        do {
            return try MeshJSON.decoder().decode(T.self, from: Data(body))
        } catch {
            throw AdminClientError("\(endpoint)\(path): unreadable answer: \(error)")
        }
    }

    /// `method path` with `body` (sent as JSON): the status and the whole answer.
    public func send(
        _ method: String,
        _ path: String,
        body: [UInt8]
    ) throws(AdminClientError) -> (status: Int, body: [UInt8]) {
        var answer: [UInt8] = []
        let status = try stream(path, method: method, body: body) { _, bytes in
            answer.append(contentsOf: bytes)
            return true
        }
        return (status, answer)
    }

    /// `method path` (GET unless told), handing over the status and body bytes as they
    /// arrive until `onBody` returns false, the body ends, or `cancellation` is
    /// cancelled (from any thread: the wait for bytes ends at once). Returns the status.
    @discardableResult
    public func stream(
        _ path: String,
        method: String = "GET",
        body: [UInt8]? = nil,
        cancellation: StreamCancellation? = nil,
        onBody: (Int, [UInt8]) -> Bool
    ) throws(AdminClientError) -> Int {
        let fd = try connect()
        guard cancellation?.attach(fd) ?? true else {
            close(fd)
            throw AdminClientError("\(endpoint)\(path): cancelled")
        }
        defer {
            cancellation?.detach()
            close(fd)
        }
        let host = if case .tcp(let host, let port) = endpoint { "\(host):\(port)" } else { "localhost" }
        let framing = body.map { "content-type: application/json\r\ncontent-length: \($0.count)\r\n" } ?? ""
        let request =
            Array(
                "\(method) \(path) HTTP/1.1\r\nhost: \(host)\r\nuser-agent: beectl\r\n\(framing)connection: close\r\n\r\n"
                    .utf8
            ) + (body ?? [])
        let sendFailure: String? = request.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let sent = Glibc.send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
                guard sent > 0 else { return String(cString: strerror(errno)) }
                offset += sent
            }
            return nil
        }
        if let sendFailure { throw AdminClientError("\(endpoint): send failed: \(sendFailure)") }
        var reader = HTTPResponseReader()
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if cancellation?.isCancelled == true { throw AdminClientError("\(endpoint)\(path): cancelled") }
            if count < 0 {
                if errno == EINTR { continue }
                let reason = errno == EAGAIN ? "no answer within \(timeout ?? 0) s" : String(cString: strerror(errno))
                throw AdminClientError("\(endpoint)\(path): \(reason)")
            }
            let output: HTTPResponseReader.Output
            do {
                output = count == 0 ? try reader.finish() : try reader.feed(buffer[..<count])
            } catch {
                throw AdminClientError("\(endpoint)\(path): \(error.reason)")
            }
            if !output.body.isEmpty, !onBody(reader.status ?? 0, output.body) { return reader.status ?? 0 }
            if output.complete || count == 0 { return reader.status ?? 0 }
        }
    }

    /// Whether something accepts connections at the endpoint now.
    public func isReachable() -> Bool {
        guard let fd = try? connect() else { return false }
        close(fd)
        return true
    }

    private func connect() throws(AdminClientError) -> Int32 {
        switch endpoint {
        case .unix(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw AdminClientError("socket: \(String(cString: strerror(errno)))") }
            setTimeout(fd)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
                close(fd)
                throw AdminClientError("\(path): socket path too long")
            }
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard result == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw AdminClientError("cannot reach the admin API at \(path): \(reason)")
            }
            return fd
        case .tcp(let host, let port):
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
            var list: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else {
                throw AdminClientError("\(host): cannot resolve")
            }
            defer { freeaddrinfo(list) }
            var lastError = "no address"
            var entry: UnsafeMutablePointer<addrinfo>? = first
            while let current = entry {
                let fd = socket(current.pointee.ai_family, current.pointee.ai_socktype, current.pointee.ai_protocol)
                if fd >= 0 {
                    setTimeout(fd)
                    if Glibc.connect(fd, current.pointee.ai_addr, current.pointee.ai_addrlen) == 0 { return fd }
                    lastError = String(cString: strerror(errno))
                    close(fd)
                }
                entry = current.pointee.ai_next
            }
            throw AdminClientError("cannot reach the admin API at \(endpoint): \(lastError)")
        }
    }

    private func setTimeout(_ fd: Int32) {
        guard let timeout else { return }
        var value = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }
}

/// Why an admin API call failed, in words for the operator.
public struct AdminClientError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    /// The HTTP status, when the server answered with an error.
    public var status: Int?

    public init(_ reason: String) { self.reason = reason }

    public init(status: Int, body: [UInt8]) {
        let message = (try? MeshJSON.decoder().decode(AdminError.self, from: Data(body)))?.error
        self.reason = "HTTP \(status): " + (message ?? String(decoding: body.prefix(200), as: UTF8.self))
        self.status = status
    }

    public var description: String { reason }
}

/// Reads one HTTP/1.1 response incrementally: the head, then a body framed by
/// `content-length`, `transfer-encoding: chunked`, or the end of the connection.
public struct HTTPResponseReader: Sendable {
    public struct Output: Sendable, Equatable {
        public var body: [UInt8] = []
        public var complete = false
    }

    private enum State: Sendable {
        case head
        case length(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case untilClose
        case done
    }

    private var state = State.head
    private var pending: [UInt8] = []
    public private(set) var status: Int?
    public private(set) var headers: [(name: String, value: String)] = []

    public init() {}

    public mutating func feed(_ bytes: ArraySlice<UInt8>) throws(AdminClientError) -> Output {
        pending.append(contentsOf: bytes)
        var output = Output()
        var index = 0
        loop: while true {
            switch state {
            case .head:
                guard let end = Self.find([13, 10, 13, 10], in: pending, from: index) else { break loop }
                try readHead(pending[index..<end])
                index = end + 4
            case .length(let remaining):
                let take = min(remaining, pending.count - index)
                output.body.append(contentsOf: pending[index..<index + take])
                index += take
                if take == remaining {
                    state = .done
                } else {
                    state = .length(remaining: remaining - take)
                    break loop
                }
            case .chunkSize:
                guard let end = Self.find([13, 10], in: pending, from: index) else { break loop }
                let line = String(decoding: pending[index..<end], as: UTF8.self)
                let sizeText = line.split(separator: ";", maxSplits: 1).first.map(String.init) ?? ""
                guard let size = Int(sizeText.trimmingSpaces, radix: 16), size >= 0 else {
                    throw AdminClientError("bad chunk size '\(line)'")
                }
                index = end + 2
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                let take = min(remaining, pending.count - index)
                output.body.append(contentsOf: pending[index..<index + take])
                index += take
                guard take == remaining else {
                    state = .chunkData(remaining: remaining - take)
                    break loop
                }
                state = .chunkDataEnd
            case .chunkDataEnd:
                guard pending.count - index >= 2 else { break loop }
                guard pending[index] == 13, pending[index + 1] == 10 else { throw AdminClientError("bad chunk end") }
                index += 2
                state = .chunkSize
            case .trailers:
                // Trailer lines are skipped; an empty line ends the body.
                guard let end = Self.find([13, 10], in: pending, from: index) else { break loop }
                state = end == index ? .done : .trailers
                index = end + 2
            case .untilClose:
                output.body.append(contentsOf: pending[index...])
                index = pending.count
                break loop
            case .done:
                output.complete = true
                index = pending.count
                break loop
            }
        }
        pending.removeFirst(index)
        if case .done = state { output.complete = true }
        return output
    }

    /// The connection ended: fine for a body framed by close, an error otherwise.
    public mutating func finish() throws(AdminClientError) -> Output {
        switch state {
        case .untilClose, .done:
            state = .done
            return Output(body: [], complete: true)
        case .head:
            throw AdminClientError("connection closed before a complete response head")
        default:
            throw AdminClientError("connection closed in the middle of the body")
        }
    }

    private mutating func readHead(_ bytes: ArraySlice<UInt8>) throws(AdminClientError) {
        let lines = String(decoding: bytes, as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
            throw AdminClientError("not an HTTP/1.1 response: '\(lines[0].prefix(80))'")
        }
        self.status = status
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append(
                (line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingSpaces)
            )
        }
        let headers = self.headers
        let header = { (name: String) in headers.first { $0.name == name }?.value }
        if header("transfer-encoding")?.lowercased().contains("chunked") == true {
            state = .chunkSize
        } else if let length = header("content-length").flatMap({ Int($0) }) {
            state = length == 0 ? .done : .length(remaining: length)
        } else {
            state = .untilClose
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from start: Int) -> Int? {
        guard haystack.count - start >= needle.count else { return nil }
        var index = start
        while index + needle.count <= haystack.count {
            if haystack[index] == needle[0], Array(haystack[index..<index + needle.count]) == needle { return index }
            index += 1
        }
        return nil
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs (HTTP's optional whitespace; the
    /// proxy's request parser uses it too).
    package var trimmingSpaces: String {
        let characters = Substring(self)
        guard let first = characters.firstIndex(where: { $0 != " " && $0 != "\t" }),
            let last = characters.lastIndex(where: { $0 != " " && $0 != "\t" })
        else { return "" }
        return String(characters[first...last])
    }
}

/// Ends a blocking `AdminClient.stream` from another thread: its socket is shut down,
/// so the read it waits in returns. The socket is detached under the same lock before
/// it is closed, so a cancel never reaches a descriptor number reused by someone else.
///
/// The lock is a pthread mutex (not `Synchronization.Mutex`, whose futexes
/// ThreadSanitizer cannot see, so it reported this class's accesses as races).
public final class StreamCancellation: @unchecked Sendable {  // every field is read and written under `lock`
    private let lock: UnsafeMutablePointer<pthread_mutex_t>
    private var fd: Int32?
    private var cancelled = false

    public init() {
        lock = .allocate(capacity: 1)
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return body()
    }

    public func cancel() {
        locked {
            cancelled = true
            if let fd { shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    public var isCancelled: Bool { locked { cancelled } }

    /// False: already cancelled; the stream must not start.
    func attach(_ fd: Int32) -> Bool {
        locked {
            guard !cancelled else { return false }
            self.fd = fd
            return true
        }
    }

    func detach() {
        locked { fd = nil }
    }
}
