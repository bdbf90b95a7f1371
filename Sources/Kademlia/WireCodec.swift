/// The node-to-node wire format: one length-prefixed binary frame per message.
///
/// ```
/// frame    := length:u32 body                 length of body, at most 262,144
/// body     := version:u8=1 type:u8 requestID:u64 flags:u8 sender payload
/// flags    := bit 0: the sender is a client
/// sender   := contact
/// contact  := id:32 bytes  addressLength:u8  address:UTF-8
/// payload  := ping | pong                     (empty)
///           | findNode | findValue            target:32 bytes
///           | nodes                           count:u8 (at most 20) contact*
///           | values                          count:u8 (at most 16) record*
///           | store                           record
///           | stored                          accepted:u8 (0 or 1)
/// record   := key:32 bytes publisher:32 bytes sequence:u64 expires:u64
///             valueLength:u32 (at most 8,192) value
/// types    := ping 1, pong 2, findNode 3, nodes 4, findValue 5, values 6, store 7, stored 8
/// ```
///
/// Integers are big-endian. A frame with trailing bytes, an unknown version or type,
/// or any length beyond its limit is an error naming what was wrong; the decoder never
/// reads past what it was given.
public enum WireCodec {
    public static let version: UInt8 = 1
    public static let maximumFrame = 262_144
    public static let maximumContacts = 20
    public static let maximumRecords = 16
    public static let maximumValue = 8192

    public static func encode(_ envelope: Envelope) -> [UInt8] {
        var body = BinaryWriter()
        body.raw([version, type(of: envelope.message)])
        body.integer(envelope.requestID)
        body.integer(UInt8(envelope.fromClient ? 1 : 0))
        append(envelope.from, to: &body)
        switch envelope.message {
        case .ping, .pong:
            break
        case .findNode(let target), .findValue(let target):
            body.raw(target.bytes)
        case .nodes(let contacts):
            body.integer(UInt8(min(contacts.count, maximumContacts)))
            for contact in contacts.prefix(maximumContacts) { append(contact, to: &body) }
        case .values(let records):
            body.integer(UInt8(min(records.count, maximumRecords)))
            for record in records.prefix(maximumRecords) { append(record, to: &body) }
        case .store(let record):
            append(record, to: &body)
        case .stored(let accepted):
            body.integer(UInt8(accepted ? 1 : 0))
        }
        var frame = BinaryWriter()
        frame.lengthPrefixed(body.bytes)
        return frame.bytes
    }

    private static func type(of message: Message) -> UInt8 {
        switch message {
        case .ping: 1
        case .pong: 2
        case .findNode: 3
        case .nodes: 4
        case .findValue: 5
        case .values: 6
        case .store: 7
        case .stored: 8
        }
    }

    private static func append(_ record: Record, to writer: inout BinaryWriter) {
        writer.raw(record.key.bytes)
        writer.raw(record.publisher.bytes)
        writer.integer(record.sequence)
        writer.integer(record.expires)
        writer.lengthPrefixed(Array(record.value.prefix(maximumValue)))
    }

    private static func append(_ contact: Contact, to writer: inout BinaryWriter) {
        writer.raw(contact.id.bytes)
        let address = Array(contact.address.utf8.prefix(255))
        writer.integer(UInt8(address.count))
        writer.raw(address)
    }
}

/// Why bytes are not a message. The code is for metrics, the reason for logs.
public struct WireError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        case oversized, truncated, unknownVersion = "unknown_version", unknownType = "unknown_type", malformed
    }

    public let code: Code
    public let reason: String

    public var description: String { "\(code.rawValue): \(reason)" }
}

/// Splits a byte stream into envelopes: feed bytes as they arrive, take the complete
/// messages. After an error the stream is unusable (the connection is closed).
public struct WireDecoder: Sendable {
    private var buffer: [UInt8] = []
    private var failed: WireError?

    public init() {}

    /// Consumes `bytes`; returns the messages they complete.
    public mutating func feed(_ bytes: some Sequence<UInt8>) throws(WireError) -> [Envelope] {
        if let failed { throw failed }
        buffer += bytes
        var envelopes: [Envelope] = []
        var offset = 0
        do throws(WireError) {
            while buffer.count - offset >= 4 {
                let length = buffer[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
                guard length <= WireCodec.maximumFrame else {
                    throw WireError(
                        code: .oversized,
                        reason: "frame of \(length) bytes (at most \(WireCodec.maximumFrame))"
                    )
                }
                guard buffer.count - offset - 4 >= length else { break }
                var reader = BinaryReader(frame: buffer[(offset + 4)..<(offset + 4 + length)])
                envelopes.append(try reader.envelope())
                offset += 4 + length
            }
        } catch {
            failed = error
            throw error
        }
        buffer.removeFirst(offset)
        return envelopes
    }

    /// Bytes of an incomplete frame held.
    public var pending: Int { buffer.count }
}

/// Reading one frame body.
extension BinaryReader where Failure == WireError {
    init(frame: ArraySlice<UInt8>) {
        self.init(frame) { WireError(code: .truncated, reason: $0) }
    }

    mutating func id(_ what: String) throws(WireError) -> NodeID {
        NodeID(bytes: try take(32, what))!
    }

    mutating func contact(_ what: String) throws(WireError) -> Contact {
        let id = try id(what + ".id")
        let length = Int(try integer(UInt8.self, what + ".addressLength"))
        guard let address = String(validating: try take(length, what + ".address"), as: UTF8.self) else {
            throw WireError(code: .malformed, reason: "\(what).address is not UTF-8")
        }
        return Contact(id: id, address: address)
    }

    mutating func record() throws(WireError) -> Record {
        let key = try id("record.key")
        let publisher = try id("record.publisher")
        let sequence = try integer(UInt64.self, "record.sequence")
        let expires = try integer(UInt64.self, "record.expires")
        let length = Int(try integer(UInt32.self, "record.valueLength"))
        guard length <= WireCodec.maximumValue else {
            throw WireError(
                code: .oversized,
                reason: "record value of \(length) bytes (at most \(WireCodec.maximumValue))"
            )
        }
        return Record(
            key: key,
            publisher: publisher,
            value: Array(try take(length, "record.value")),
            sequence: sequence,
            expires: expires
        )
    }

    mutating func envelope() throws(WireError) -> Envelope {
        let version = try integer(UInt8.self, "version")
        guard version == WireCodec.version else {
            throw WireError(code: .unknownVersion, reason: "version \(version) (this node speaks \(WireCodec.version))")
        }
        let type = try integer(UInt8.self, "type")
        let requestID = try integer(UInt64.self, "requestID")
        let flags = try integer(UInt8.self, "flags")
        guard flags & ~1 == 0 else { throw WireError(code: .malformed, reason: "unknown flags \(flags)") }
        let sender = try contact("sender")
        let message: Message
        switch type {
        case 1: message = .ping
        case 2: message = .pong
        case 3: message = .findNode(try id("target"))
        case 4:
            let count = Int(try integer(UInt8.self, "count"))
            guard count <= WireCodec.maximumContacts else {
                throw WireError(code: .oversized, reason: "\(count) contacts (at most \(WireCodec.maximumContacts))")
            }
            var contacts: [Contact] = []
            for index in 0..<count { contacts.append(try contact("contacts[\(index)]")) }
            message = .nodes(contacts)
        case 5: message = .findValue(try id("key"))
        case 6:
            let count = Int(try integer(UInt8.self, "count"))
            guard count <= WireCodec.maximumRecords else {
                throw WireError(code: .oversized, reason: "\(count) records (at most \(WireCodec.maximumRecords))")
            }
            var records: [Record] = []
            for _ in 0..<count { records.append(try record()) }
            message = .values(records)
        case 7: message = .store(try record())
        case 8:
            let accepted = try integer(UInt8.self, "accepted")
            guard accepted <= 1 else { throw WireError(code: .malformed, reason: "accepted is \(accepted)") }
            message = .stored(accepted == 1)
        default:
            throw WireError(code: .unknownType, reason: "message type \(type)")
        }
        guard rest.isEmpty else {
            throw WireError(code: .malformed, reason: "\(rest.count) bytes after the message")
        }
        return Envelope(from: sender, requestID: requestID, message: message, fromClient: flags & 1 == 1)
    }
}
