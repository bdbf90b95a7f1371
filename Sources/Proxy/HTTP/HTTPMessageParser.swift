import MeshAPI
import NIOCore

/// Why a byte stream is not HTTP/1.1 we can frame. Each one ends the connection (after
/// a 400 where a response can still be written): a message whose length we cannot
/// know is never guessed at, and never allowed.
struct HTTPFramingError: Error, Equatable, CustomStringConvertible {
    enum Code: String, Equatable, CaseIterable {
        case headTooLarge = "head_too_large"
        case malformedStartLine = "malformed_start_line"
        case malformedHeader = "malformed_header"
        case badContentLength = "bad_content_length"
        case ambiguousLength = "ambiguous_length"
        case unsupportedTransferEncoding = "unsupported_transfer_encoding"
        case malformedChunk = "malformed_chunk"
    }

    let code: Code
    let detail: String
    var description: String { "\(code.rawValue): \(detail)" }
}

/// A parsed request or response head.
struct HTTPHead: Equatable {
    /// Request: method; response: status code as text.
    var first: String
    /// Request: target (path and query); response: reason.
    var second: String
    var version: String
    /// Names lower-cased, in order.
    var headers: [(name: String, value: String)]

    static func == (left: HTTPHead, right: HTTPHead) -> Bool {
        left.first == right.first && left.second == right.second && left.version == right.version
            && left.headers.elementsEqual(right.headers) { $0 == $1 }
    }

    func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }

    /// Whether the connection stays open after this message (HTTP/1.1 default keep-alive,
    /// HTTP/1.0 default close).
    var keepAlive: Bool {
        let connection = header("connection")?.lowercased() ?? ""
        if connection.contains("close") { return false }
        return version == "HTTP/1.1" || connection.contains("keep-alive")
    }
}

/// Splits one direction of an HTTP/1.1 connection into messages: heads, body bytes and
/// ends, handing back the exact bytes of each piece so that the caller can forward or
/// drop a whole message. Pure, incremental (any split of the input gives the same
/// pieces), bounded: a head above 16 KiB or a chunk line above 1 KiB is an error.
///
/// Bodies: `Content-Length`, or `Transfer-Encoding: chunked` (with extensions and
/// trailers). Both at once, a list of differing lengths, or another transfer coding
/// are refused: they are how requests are smuggled past a proxy.
struct HTTPMessageParser {
    enum Piece: Equatable {
        case head(HTTPHead, bytes: ByteBuffer)
        case body(ByteBuffer)
        /// The message is complete.
        case end
    }

    /// How a message's body is delimited, decided from its head.
    enum BodyFraming: Equatable {
        case none
        case length(Int)
        case chunked
        /// Until the connection closes (a response without length).
        case untilClose
    }

    static let maximumHead = 16 * 1024
    static let maximumChunkLine = 1024

    private enum State: Equatable {
        case head
        case length(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case untilClose
        case failed
    }

    private var state = State.head
    private var pending = ByteBuffer()
    /// For a response parser: how the message whose head was just read is framed
    /// (requests: from their own headers). Set by `framing`.
    private let framing: (HTTPHead) throws(HTTPFramingError) -> BodyFraming

    init(framing: @escaping (HTTPHead) throws(HTTPFramingError) -> BodyFraming) {
        self.framing = framing
    }

    /// A request parser: bodies from Content-Length or chunked, none otherwise.
    static func requests() -> HTTPMessageParser {
        HTTPMessageParser { head throws(HTTPFramingError) in try requestFraming(head) }
    }

    static func requestFraming(_ head: HTTPHead) throws(HTTPFramingError) -> BodyFraming {
        let encoding = head.headers.filter { $0.name == "transfer-encoding" }.map { $0.value.lowercased() }
        let lengths = head.headers.filter { $0.name == "content-length" }.map(\.value)
        if !encoding.isEmpty {
            guard lengths.isEmpty else {
                throw HTTPFramingError(code: .ambiguousLength, detail: "both Content-Length and Transfer-Encoding")
            }
            guard encoding.count == 1, encoding[0].trimmingSpaces == "chunked" else {
                throw HTTPFramingError(code: .unsupportedTransferEncoding, detail: encoding.joined(separator: ", "))
            }
            return .chunked
        }
        guard let length = try contentLength(lengths) else { return .none }
        return length == 0 ? .none : .length(length)
    }

    static func contentLength(_ values: [String]) throws(HTTPFramingError) -> Int? {
        guard !values.isEmpty else { return nil }
        let all = values.flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces }
        guard let first = all.first, all.allSatisfy({ $0 == first }) else {
            throw HTTPFramingError(code: .ambiguousLength, detail: "differing Content-Length values")
        }
        guard !first.isEmpty, first.utf8.count <= 15, first.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            let length = Int(first)
        else {
            throw HTTPFramingError(code: .badContentLength, detail: "'\(first)'")
        }
        return length
    }

    /// Consumes `input`; returns the pieces it completes. After an error, every later
    /// call returns the same error.
    mutating func feed(_ input: ByteBuffer) -> Result<[Piece], HTTPFramingError> {
        guard state != .failed else {
            return .failure(HTTPFramingError(code: .malformedStartLine, detail: "stream already failed"))
        }
        var buffer = input
        var pieces: [Piece] = []
        do throws(HTTPFramingError) {
            while buffer.readableBytes > 0 {
                switch state {
                case .head:
                    guard let head = try takeHead(&buffer) else { return .success(pieces) }
                    pieces.append(.head(head.0, bytes: head.1))
                    switch try framing(head.0) {
                    case .none:
                        pieces.append(.end)
                    case .length(let length):
                        state = .length(remaining: length)
                    case .chunked:
                        state = .chunkSize
                    case .untilClose:
                        state = .untilClose
                    }
                case .length(let remaining):
                    let count = min(remaining, buffer.readableBytes)
                    pieces.append(.body(buffer.readSlice(length: count)!))
                    if remaining == count {
                        state = .head
                        pieces.append(.end)
                    } else {
                        state = .length(remaining: remaining - count)
                    }
                case .chunkSize:
                    guard let line = try takeLine(&buffer, limit: Self.maximumChunkLine) else {
                        return .success(pieces)
                    }
                    let size = try Self.chunkSize(line.text)
                    pieces.append(.body(line.bytes))
                    state = size == 0 ? .trailers : .chunkData(remaining: size)
                case .chunkData(let remaining):
                    let count = min(remaining, buffer.readableBytes)
                    pieces.append(.body(buffer.readSlice(length: count)!))
                    state = remaining == count ? .chunkDataEnd : .chunkData(remaining: remaining - count)
                case .chunkDataEnd:
                    guard let line = try takeLine(&buffer, limit: 2) else { return .success(pieces) }
                    guard line.text.isEmpty else {
                        throw HTTPFramingError(code: .malformedChunk, detail: "chunk data not followed by CRLF")
                    }
                    pieces.append(.body(line.bytes))
                    state = .chunkSize
                case .trailers:
                    guard let line = try takeLine(&buffer, limit: Self.maximumHead) else { return .success(pieces) }
                    pieces.append(.body(line.bytes))
                    if line.text.isEmpty {
                        state = .head
                        pieces.append(.end)
                    }
                case .untilClose:
                    pieces.append(.body(buffer.readSlice(length: buffer.readableBytes)!))
                case .failed:
                    return .failure(HTTPFramingError(code: .malformedStartLine, detail: "stream already failed"))
                }
            }
            return .success(pieces)
        } catch {
            state = .failed
            return .failure(error)
        }
    }

    /// Whether the parser is between messages (nothing half-read).
    var isIdle: Bool { state == .head && pending.readableBytes == 0 }

    /// The head, once its blank line has arrived (bytes kept across calls).
    private mutating func takeHead(_ buffer: inout ByteBuffer) throws(HTTPFramingError) -> (HTTPHead, ByteBuffer)? {
        // Search only the new bytes plus the three before them for CRLFCRLF.
        let searchFrom = max(0, pending.readableBytes - 3)
        pending.writeBuffer(&buffer)
        let view = pending.readableBytesView
        var end: Int?
        var index = view.startIndex + searchFrom
        while index + 3 < view.endIndex {
            if view[index] == 13, view[index + 1] == 10, view[index + 2] == 13, view[index + 3] == 10 {
                end = index + 4 - view.startIndex
                break
            }
            index += 1
        }
        guard let end else {
            if pending.readableBytes > Self.maximumHead {
                throw HTTPFramingError(code: .headTooLarge, detail: "more than \(Self.maximumHead) bytes")
            }
            return nil
        }
        guard end <= Self.maximumHead else {
            throw HTTPFramingError(code: .headTooLarge, detail: "more than \(Self.maximumHead) bytes")
        }
        let bytes = pending.readSlice(length: end)!
        // What followed the head goes back to the caller.
        buffer = pending
        pending = ByteBuffer()
        return (try Self.parseHead(bytes), bytes)
    }

    /// One CRLF-terminated line (without the CRLF in `text`, with it in `bytes`).
    private mutating func takeLine(
        _ buffer: inout ByteBuffer,
        limit: Int
    ) throws(HTTPFramingError) -> (text: String, bytes: ByteBuffer)? {
        pending.writeBuffer(&buffer)
        let view = pending.readableBytesView
        guard let newline = view.firstIndex(of: 10) else {
            if pending.readableBytes > limit {
                throw HTTPFramingError(code: .malformedChunk, detail: "line longer than \(limit) bytes")
            }
            return nil
        }
        let length = newline - view.startIndex + 1
        guard length <= limit + 2, length >= 2, view[newline - 1] == 13 else {
            throw HTTPFramingError(code: .malformedChunk, detail: "line not ended by CRLF within \(limit) bytes")
        }
        let bytes = pending.readSlice(length: length)!
        buffer = pending
        pending = ByteBuffer()
        return (String(decoding: bytes.readableBytesView.dropLast(2), as: UTF8.self), bytes)
    }

    static func chunkSize(_ line: String) throws(HTTPFramingError) -> Int {
        let digits = line.split(separator: ";", maxSplits: 1).first.map { $0.trimmingSpaces } ?? ""
        guard !digits.isEmpty, digits.utf8.count <= 15, let size = Int(digits, radix: 16),
            digits.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x66) })
        else {
            throw HTTPFramingError(code: .malformedChunk, detail: "chunk size '\(digits)'")
        }
        return size
    }

    /// Start line and headers; tokens checked, obsolete line folding refused.
    ///
    /// Works on the UTF-8 bytes: every request and response on an HTTP port comes
    /// through here, and character-level parsing (grapheme breaking, Unicode whitespace
    /// tables) was the largest cost of the HTTP gate. Lines end at CR LF; a lone CR or
    /// LF inside a line is refused by the token checks, as before.
    static func parseHead(_ bytes: ByteBuffer) throws(HTTPFramingError) -> HTTPHead {
        let head = Array(bytes.readableBytesView)
        var lines: [ArraySlice<UInt8>] = []
        var lineStart = 0
        var index = 0
        while index + 1 < head.count {
            if head[index] == 13, head[index + 1] == 10 {
                lines.append(head[lineStart..<index])
                index += 2
                lineStart = index
            } else {
                index += 1
            }
        }
        // The head ends with an empty line: its last two lines are the last header's
        // CR LF and the blank one.
        guard lineStart == head.count, lines.count >= 2, lines[lines.count - 1].isEmpty else {
            throw HTTPFramingError(code: .malformedHeader, detail: "head not ended by an empty line")
        }
        lines.removeLast()
        let startLine = lines.removeFirst()
        let start = Self.splitStartLine(startLine)
        guard start.count >= 2, !start[0].isEmpty, !start[1].isEmpty else {
            throw HTTPFramingError(code: .malformedStartLine, detail: "'\(String(decoding: startLine, as: UTF8.self))'")
        }
        var result: HTTPHead
        if start[0].starts(with: Array("HTTP/".utf8)) {
            let version = String(decoding: start[0], as: UTF8.self)
            guard version == "HTTP/1.1" || version == "HTTP/1.0", start[1].count == 3,
                start[1].allSatisfy({ $0 < 0x80 }), Int(String(decoding: start[1], as: UTF8.self)) != nil
            else {
                throw HTTPFramingError(code: .malformedStartLine, detail: "status line")
            }
            result = HTTPHead(
                first: String(decoding: start[1], as: UTF8.self),
                second: start.count > 2 ? String(decoding: start[2], as: UTF8.self) : "",
                version: version,
                headers: []
            )
        } else {
            let version = start.count == 3 ? String(decoding: start[2], as: UTF8.self) : ""
            guard start.count == 3, version == "HTTP/1.1" || version == "HTTP/1.0",
                start[0].allSatisfy({ Self.isLetter($0) || $0 == UInt8(ascii: "-") }),
                start[1].allSatisfy({ $0 < 0x80 && !Self.isWhitespace($0) })
            else {
                throw HTTPFramingError(code: .malformedStartLine, detail: "request line")
            }
            result = HTTPHead(
                first: String(decoding: start[0], as: UTF8.self),
                second: String(decoding: start[1], as: UTF8.self),
                version: version,
                headers: []
            )
        }
        result.headers.reserveCapacity(lines.count)
        for line in lines {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon != line.startIndex,
                line.first != UInt8(ascii: " "), line.first != UInt8(ascii: "\t")
            else {
                throw HTTPFramingError(
                    code: .malformedHeader,
                    detail: "'\(String(decoding: line.prefix(64), as: UTF8.self))'"
                )
            }
            let name = line[..<colon]
            guard name.allSatisfy({ $0 < 0x80 && !Self.isWhitespace($0) }) else {
                throw HTTPFramingError(
                    code: .malformedHeader,
                    detail: "header name '\(String(decoding: name.prefix(64), as: UTF8.self))'"
                )
            }
            var value = line[(colon + 1)...]
            while let first = value.first, first == 0x20 || first == 0x09 { value = value.dropFirst() }
            while let last = value.last, last == 0x20 || last == 0x09 { value = value.dropLast() }
            let lowered = name.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }
            result.headers.append((String(decoding: lowered, as: UTF8.self), String(decoding: value, as: UTF8.self)))
        }
        return result
    }

    /// The start line split at its first two spaces (empty parts kept).
    private static func splitStartLine(_ line: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        var parts: [ArraySlice<UInt8>] = []
        var rest = line
        while parts.count < 2, let space = rest.firstIndex(of: 0x20) {
            parts.append(rest[..<space])
            rest = rest[(space + 1)...]
        }
        parts.append(rest)
        return parts
    }

    /// ASCII whitespace as `Character.isWhitespace` sees it: tab, LF, VT, FF, CR, space.
    private static func isWhitespace(_ byte: UInt8) -> Bool { (0x09...0x0D).contains(byte) || byte == 0x20 }

    private static func isLetter(_ byte: UInt8) -> Bool { (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) }
}
