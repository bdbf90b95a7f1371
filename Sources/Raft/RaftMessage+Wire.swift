/// A `RaftMessage` as bytes between members (the transport frames and authenticates
/// them; this is the message alone). Integers are little-endian.
///
/// | field | bytes |
/// | --- | --- |
/// | from, to, term | u64 each |
/// | kind | u8: 1 requestVote, 2 vote, 3 append, 4 appendReply, 5 installSnapshot, 6 timeoutNow |
/// | requestVote | flags u8 (1 pre, 2 transfer), lastIndex u64, lastTerm u64 |
/// | vote | flags u8 (1 pre, 2 granted) |
/// | append | prevIndex, prevTerm, commit, round u64, count u32, entries (as the log's records) |
/// | appendReply | flags u8 (1 success, 2 a conflict term follows), index u64, conflictTerm u64, round u64 |
/// | installSnapshot | index, term u64, membership, data length u64, data |
extension RaftMessage {
    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.u64(from)
        writer.u64(to)
        writer.u64(term)
        switch body {
        case .requestVote(let pre, let lastIndex, let lastTerm, let transfer):
            writer.byte(1)
            writer.byte((pre ? 1 : 0) | (transfer ? 2 : 0))
            writer.u64(lastIndex)
            writer.u64(lastTerm)
        case .vote(let pre, let granted):
            writer.byte(2)
            writer.byte((pre ? 1 : 0) | (granted ? 2 : 0))
        case .append(let prevIndex, let prevTerm, let entries, let commit, let round):
            writer.byte(3)
            writer.u64(prevIndex)
            writer.u64(prevTerm)
            writer.u64(commit)
            writer.u64(round)
            writer.u32(UInt32(entries.count))
            for entry in entries { writer.entry(entry) }
        case .appendReply(let success, let index, let conflictTerm, let round):
            writer.byte(4)
            writer.byte((success ? 1 : 0) | (conflictTerm == nil ? 0 : 2))
            writer.u64(index)
            writer.u64(conflictTerm ?? 0)
            writer.u64(round)
        case .installSnapshot(let snapshot):
            writer.byte(5)
            writer.snapshot(snapshot)
        case .timeoutNow:
            writer.byte(6)
        }
        return writer.bytes
    }

    /// Decodes one message; anything short, long, unknown or inconsistent (entries
    /// that do not follow one another) is refused.
    public init(decoding bytes: ArraySlice<UInt8>) throws(RaftWireError) {
        var reader = ByteReader(bytes)
        guard let from = reader.u64(), let to = reader.u64(), let term = reader.u64(), let kind = reader.byte() else {
            throw RaftWireError(.truncated)
        }
        let body: Body
        switch kind {
        case 1:
            guard let flags = reader.byte(), flags < 4, let lastIndex = reader.u64(), let lastTerm = reader.u64() else {
                throw RaftWireError(.malformed)
            }
            body = .requestVote(pre: flags & 1 != 0, lastIndex: lastIndex, lastTerm: lastTerm, transfer: flags & 2 != 0)
        case 2:
            guard let flags = reader.byte(), flags < 4 else { throw RaftWireError(.malformed) }
            body = .vote(pre: flags & 1 != 0, granted: flags & 2 != 0)
        case 3:
            guard let prevIndex = reader.u64(), let prevTerm = reader.u64(), let commit = reader.u64(),
                let round = reader.u64(), let count = reader.u32(), let entries = reader.entries(count: count),
                entries.first.map({ $0.index == prevIndex &+ 1 }) ?? true
            else { throw RaftWireError(.malformed) }
            body = .append(prevIndex: prevIndex, prevTerm: prevTerm, entries: entries, commit: commit, round: round)
        case 4:
            guard let flags = reader.byte(), flags < 4, let index = reader.u64(), let conflictTerm = reader.u64(),
                let round = reader.u64()
            else { throw RaftWireError(.malformed) }
            body = .appendReply(
                success: flags & 1 != 0,
                index: index,
                conflictTerm: flags & 2 != 0 ? conflictTerm : nil,
                round: round
            )
        case 5:
            guard let snapshot = reader.snapshot() else { throw RaftWireError(.malformed) }
            body = .installSnapshot(snapshot)
        case 6:
            body = .timeoutNow
        default:
            throw RaftWireError(.unknownKind)
        }
        guard reader.remaining == 0 else { throw RaftWireError(.trailingBytes) }
        self.init(from: from, to: to, term: term, body: body)
    }
}

/// Why bytes from a peer are not a Raft message.
public struct RaftWireError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        case truncated, malformed
        case unknownKind = "unknown_kind"
        case trailingBytes = "trailing_bytes"
    }

    public let code: Code

    public init(_ code: Code) { self.code = code }

    public var description: String { "not a Raft message: \(code.rawValue)" }
}
