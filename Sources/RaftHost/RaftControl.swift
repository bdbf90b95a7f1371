import Raft

/// What agents ask of each other about a group besides Raft's own messages: joining
/// and leaving it, and a member's writes and reads carried to the leader. The sender
/// is the connection's proven node; integers are little-endian.
///
/// | kind | frame | body |
/// | --- | --- | --- |
/// | 2 | `join` | address length u32, address (`host:port` where the sender listens, at most 255 bytes), empty u8 (the sender holds no entry) |
/// | 3 | `leave` | nothing |
/// | 4 | `forward` | request u64, command (the rest) |
/// | 5 | `forwarded` | request u64, accepted u8, index u64, term u64 |
/// | 6 | `readIndex` | request u64 |
/// | 7 | `readIndexReply` | request u64, accepted u8, index u64 |
///
/// A forwarded write is proposed by the leader, which answers with the entry's index
/// and term; the member that forwarded it answers its client once it applies that
/// entry itself (the same entry at the same index and term gives the same outcome on
/// every member). A read asks the leader for a read index (ReadIndex), and is
/// answered once the member applied up to it.
public enum RaftControl: Equatable, Sendable {
    case join(address: String, empty: Bool)
    case leave
    case forward(request: UInt64, command: [UInt8])
    case forwarded(request: UInt64, accepted: Bool, index: UInt64, term: UInt64)
    case readIndex(request: UInt64)
    case readIndexReply(request: UInt64, accepted: Bool, index: UInt64)

    public var kind: UInt8 {
        switch self {
        case .join: 2
        case .leave: 3
        case .forward: 4
        case .forwarded: 5
        case .readIndex: 6
        case .readIndexReply: 7
        }
    }

    public static let kinds: ClosedRange<UInt8> = 2...7

    /// The body, after the frame's kind and group.
    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        switch self {
        case .join(let address, let empty):
            writer.string(address)
            writer.byte(empty ? 1 : 0)
        case .leave:
            break
        case .forward(let request, let command):
            writer.u64(request)
            writer.bytes.append(contentsOf: command)
        case .forwarded(let request, let accepted, let index, let term):
            writer.u64(request)
            writer.byte(accepted ? 1 : 0)
            writer.u64(index)
            writer.u64(term)
        case .readIndex(let request):
            writer.u64(request)
        case .readIndexReply(let request, let accepted, let index):
            writer.u64(request)
            writer.byte(accepted ? 1 : 0)
            writer.u64(index)
        }
        return writer.bytes
    }

    /// Nil: not a control frame of this kind.
    public init?(kind: UInt8, body: ArraySlice<UInt8>) {
        var reader = ByteReader(body)
        let decoded: RaftControl?
        switch kind {
        case 2:
            guard let address = reader.string(), address.utf8.count <= 255, let empty = reader.byte(), empty <= 1
            else { return nil }
            decoded = .join(address: address, empty: empty == 1)
        case 3:
            decoded = .leave
        case 4:
            guard let request = reader.u64(), let command = reader.take(reader.remaining) else { return nil }
            decoded = .forward(request: request, command: command)
        case 5:
            guard let request = reader.u64(), let accepted = reader.byte(), let index = reader.u64(),
                let term = reader.u64()
            else { return nil }
            decoded = .forwarded(request: request, accepted: accepted == 1, index: index, term: term)
        case 6:
            decoded = reader.u64().map { .readIndex(request: $0) }
        case 7:
            guard let request = reader.u64(), let accepted = reader.byte(), let index = reader.u64() else { return nil }
            decoded = .readIndexReply(request: request, accepted: accepted == 1, index: index)
        default:
            return nil
        }
        guard let decoded, reader.remaining == 0 else { return nil }
        self = decoded
    }
}
