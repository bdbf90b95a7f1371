import MeshConfiguration
import NIOCore

/// The mTLS preface: after the handshake, the client names the service and port it
/// wants; the server answers with one status before any payload flows.
///
/// Both directions use the same frame (integers big-endian):
///
/// ```
/// +-----+-----+---------+---------------+-------------------+
/// | 'B' | 'M' | version | length (u16)  | body (length B)   |
/// +-----+-----+---------+---------------+-------------------+
///   request body (version 1):  port (u16) | service (UTF-8, length-2 B)
///   response body (version 1): status (u8: 0 ok, 1 denied) | reason (u16)
/// ```
///
/// `service` is `<name>.<namespace>`: lowercase letters, digits, `-` and `.`, at most
/// 253 bytes. A body longer than `maximumBodyLength` is refused before it is buffered,
/// so a peer cannot make the server hold more than 261 bytes for a preface.
public enum MeshPreface {
    public static let magic: (UInt8, UInt8) = (UInt8(ascii: "B"), UInt8(ascii: "M"))
    public static let version: UInt8 = 1
    public static let headerLength = 5
    public static let maximumBodyLength = 256

    /// Takes one complete frame off the front of `buffer` and returns its body, or nil
    /// when more bytes are needed. Throws on anything that can never become valid.
    public static func decodeFrame(_ buffer: inout ByteBuffer) throws(PrefaceError) -> ByteBuffer? {
        let available = buffer.readableBytes
        if available >= 1, buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) != magic.0 {
            throw PrefaceError(.badMagic, "frame does not start with 'BM'")
        }
        if available >= 2, buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self) != magic.1 {
            throw PrefaceError(.badMagic, "frame does not start with 'BM'")
        }
        if available >= 3, let version = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt8.self),
            version != MeshPreface.version
        {
            throw PrefaceError(.unknownVersion, "preface version \(version), this proxy speaks \(MeshPreface.version)")
        }
        guard available >= headerLength,
            let length = buffer.getInteger(at: buffer.readerIndex + 3, as: UInt16.self)
        else { return nil }
        guard Int(length) <= maximumBodyLength else {
            throw PrefaceError(.oversized, "preface body of \(length) bytes exceeds \(maximumBodyLength)")
        }
        guard available >= headerLength + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: headerLength)
        return buffer.readSlice(length: Int(length))!
    }

    /// Called when the stream ended: leftover bytes are a truncated frame.
    public static func checkComplete(_ buffer: ByteBuffer) throws(PrefaceError) {
        if buffer.readableBytes > 0 {
            throw PrefaceError(.truncated, "stream ended after \(buffer.readableBytes) bytes of a preface frame")
        }
        throw PrefaceError(.truncated, "stream ended before the preface")
    }

    static func writeFrame(body: ByteBuffer, into buffer: inout ByteBuffer) {
        buffer.writeInteger(magic.0)
        buffer.writeInteger(magic.1)
        buffer.writeInteger(version)
        buffer.writeInteger(UInt16(body.readableBytes))
        var body = body
        buffer.writeBuffer(&body)
    }
}

/// The client's request: which service and port it wants to reach.
public struct PrefaceRequest: Hashable, Sendable {
    public let service: String
    public let port: UInt16

    public init(service: String, port: UInt16) throws(PrefaceError) {
        try PrefaceRequest.validate(service: service)
        guard port != 0 else { throw PrefaceError(.malformed, "port 0") }
        self.service = service
        self.port = port
    }

    public func encode(into buffer: inout ByteBuffer) {
        var body = ByteBuffer()
        body.writeInteger(port)
        body.writeString(service)
        MeshPreface.writeFrame(body: body, into: &buffer)
    }

    /// Decodes a request body (as returned by `MeshPreface.decodeFrame`).
    public init(body: ByteBuffer) throws(PrefaceError) {
        var body = body
        guard let port = body.readInteger(as: UInt16.self) else {
            throw PrefaceError(.malformed, "request body of \(body.readableBytes) bytes has no port")
        }
        guard let service = body.readString(length: body.readableBytes) else {
            throw PrefaceError(.malformed, "service is not UTF-8")
        }
        try self.init(service: service, port: port)
    }

    static func validate(service: String) throws(PrefaceError) {
        if let problem = ServiceName.problem(service) { throw PrefaceError(.malformed, problem) }
    }
}

/// The server's answer to a request.
public struct PrefaceResponse: Hashable, Sendable {
    /// Why a request was denied. Raw values are on the wire: never renumber.
    public enum Reason: UInt16, Sendable, Hashable {
        case none = 0
        case unknownService = 1
        case portNotAllowed = 2
        case upstreamUnavailable = 3
        case malformedPreface = 4
        case policyDenied = 5
        case draining = 6

        public var label: String {
            switch self {
            case .none: "none"
            case .unknownService: "unknown_service"
            case .portNotAllowed: "port_not_allowed"
            case .upstreamUnavailable: "upstream_unavailable"
            case .malformedPreface: "malformed_preface"
            case .policyDenied: "policy_denied"
            case .draining: "draining"
            }
        }
    }

    public enum Status: UInt8, Sendable, Hashable {
        case ok = 0
        case denied = 1
    }

    public let status: Status
    public let reason: Reason

    public static let ok = PrefaceResponse(status: .ok, reason: .none)

    public static func denied(_ reason: Reason) -> PrefaceResponse {
        PrefaceResponse(status: .denied, reason: reason)
    }

    private init(status: Status, reason: Reason) {
        self.status = status
        self.reason = reason
    }

    public func encode(into buffer: inout ByteBuffer) {
        var body = ByteBuffer()
        body.writeInteger(status.rawValue)
        body.writeInteger(reason.rawValue)
        MeshPreface.writeFrame(body: body, into: &buffer)
    }

    public init(body: ByteBuffer) throws(PrefaceError) {
        var body = body
        guard body.readableBytes == 3, let rawStatus = body.readInteger(as: UInt8.self),
            let rawReason = body.readInteger(as: UInt16.self)
        else {
            throw PrefaceError(.malformed, "response body must be 3 bytes")
        }
        guard let status = Status(rawValue: rawStatus) else {
            throw PrefaceError(.malformed, "unknown response status \(rawStatus)")
        }
        guard let reason = Reason(rawValue: rawReason) else {
            throw PrefaceError(.malformed, "unknown response reason \(rawReason)")
        }
        guard (status == .ok) == (reason == .none) else {
            throw PrefaceError(.malformed, "status \(status) with reason \(reason.label)")
        }
        self.init(status: status, reason: reason)
    }
}

/// A preface that cannot be accepted.
public struct PrefaceError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, CaseIterable {
        case badMagic = "bad_magic"
        case unknownVersion = "unknown_version"
        case oversized = "oversized"
        case truncated = "truncated"
        case malformed = "malformed"
        case timeout = "timeout"
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "\(code.rawValue): \(reason)" }
}
