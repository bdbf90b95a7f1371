/// A value stored under a key by one publisher: kept by the `k` nodes closest to the key
/// until it expires, republished by its publisher before that. Several publishers may
/// store under one key (the endpoints of one service); holders keep one record per
/// publisher and answer with all of them.
///
/// From one publisher, a higher `sequence` replaces a lower one; an expired record is
/// dropped by holders and refused when offered. Whether a record may be stored at all
/// (its signature, what its signer may publish, that it is the publisher it claims) is
/// the `RecordValidator`'s call.
public struct Record: Hashable, Sendable {
    public var key: NodeID
    /// Who published it (for a service record: its endpoint).
    public var publisher: NodeID
    public var value: [UInt8]
    public var sequence: UInt64
    /// Virtual or wall time in nanoseconds, as the caller's clock counts.
    public var expires: UInt64

    public init(key: NodeID, publisher: NodeID, value: [UInt8], sequence: UInt64, expires: UInt64) {
        self.key = key
        self.publisher = publisher
        self.value = value
        self.sequence = sequence
        self.expires = expires
    }
}

/// Decides whether a record may be stored or believed (signatures, ownership). The
/// state machine calls it on every STORE it receives and every record a lookup returns.
public protocol RecordValidator: Sendable {
    func validate(_ record: Record) -> Bool
}

/// What nodes say to each other. Requests carry an ID the response repeats.
public enum Message: Hashable, Sendable {
    case ping
    case pong
    case findNode(NodeID)
    case nodes([Contact])
    case findValue(NodeID)
    /// The answer to `findValue` from a holder: every record it keeps under the key.
    case values([Record])
    case store(Record)
    case stored(Bool)

    var isRequest: Bool {
        switch self {
        case .ping, .findNode, .findValue, .store: true
        case .pong, .nodes, .values, .stored: false
        }
    }
}

/// One message on the wire, with who sent it and whether the sender is a client (a
/// client does lookups but is never put into routing tables).
public struct Envelope: Hashable, Sendable {
    public var from: Contact
    public var requestID: UInt64
    public var message: Message
    public var fromClient: Bool

    public init(from: Contact, requestID: UInt64, message: Message, fromClient: Bool = false) {
        self.from = from
        self.requestID = requestID
        self.message = message
        self.fromClient = fromClient
    }
}
