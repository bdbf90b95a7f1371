import Raft
import RaftHost
import Testing

/// Messages between members as bytes: every kind survives the trip, and whatever is
/// short, long, unknown or inconsistent is refused with a code, never trapped on.
@Suite struct RaftWireTests {
    static let messages: [RaftMessage.Body] = [
        .requestVote(pre: true, lastIndex: 10, lastTerm: 4, transfer: false),
        .requestVote(pre: false, lastIndex: 0, lastTerm: 0, transfer: true),
        .vote(pre: true, granted: false),
        .vote(pre: false, granted: true),
        .append(
            prevIndex: 9,
            prevTerm: 4,
            entries: [
                LogEntry(term: 5, index: 10, kind: .noop),
                LogEntry(term: 5, index: 11, kind: .command(Array("put k v".utf8))),
                LogEntry(term: 5, index: 12, kind: .membership(Membership(voters: [1, 2, 3], learners: [4]))),
            ],
            commit: 9,
            round: 17
        ),
        .append(prevIndex: 3, prevTerm: 1, entries: [], commit: 3, round: 1),
        .appendReply(success: false, index: 7, conflictTerm: 3, round: 17),
        .appendReply(success: true, index: 12, conflictTerm: nil, round: 18),
        .installSnapshot(Snapshot(index: 100, term: 4, membership: Membership(voters: [1, 2]), data: [1, 2, 3])),
        .timeoutNow,
    ]

    @Test(arguments: messages)
    func everyKindSurvivesTheTrip(_ body: RaftMessage.Body) throws {
        let message = RaftMessage(from: 1, to: 0xFFFF_FFFF_FFFF_FFFF, term: 5, body: body)
        let bytes = message.encoded()
        #expect(try RaftMessage(decoding: bytes[...]) == message)
        // Every prefix is refused, and so is a byte too many.
        for length in 0..<bytes.count {
            #expect(throws: RaftWireError.self) { try RaftMessage(decoding: bytes[..<length]) }
        }
        let long = #expect(throws: RaftWireError.self) { try RaftMessage(decoding: (bytes + [0])[...]) }
        #expect(long?.code == .trailingBytes || long?.code == .malformed)
    }

    static let controls: [RaftControl] = [
        .join(address: "10.250.0.2:15012", empty: true), .join(address: "[::1]:1", empty: false), .leave,
        .forward(request: 7, command: [1, 2, 3]),
        .forward(request: 0, command: []), .forwarded(request: 9, accepted: true, index: 42, term: 3),
        .forwarded(request: 9, accepted: false, index: 0, term: 0), .readIndex(request: .max),
        .readIndexReply(request: 1, accepted: true, index: 77),
    ]

    @Test(arguments: controls)
    func everyControlFrameSurvivesTheTripAndACutOneIsRefused(_ control: RaftControl) {
        let body = control.encoded()
        #expect(RaftControl(kind: control.kind, body: body[...]) == control)
        #expect(RaftControl.kinds.contains(control.kind))
        // A forward's command is the rest of the frame: only its request can be cut.
        let shortest = if case .forward = control { 8 } else { body.count }
        for length in 0..<shortest {
            #expect(RaftControl(kind: control.kind, body: body[..<length]) == nil, "cut at \(length)")
        }
        if case .forward = control {
        } else {
            #expect(RaftControl(kind: control.kind, body: (body + [0])[...]) == nil, "a byte too many")
        }
        #expect(RaftControl(kind: 1, body: body[...]) == nil && RaftControl(kind: 8, body: body[...]) == nil)
        // A join's address is at most 255 bytes.
        #expect(
            RaftControl(
                kind: 2,
                body: RaftControl.join(address: String(repeating: "a", count: 256), empty: false).encoded()[...]
            )
                == nil
        )
    }

    @Test func unknownKindsBadFlagsAndEntriesThatDoNotFollowAreRefused() {
        var unknown = RaftMessage(from: 1, to: 2, term: 1, body: .timeoutNow).encoded()
        unknown[24] = 9
        #expect(throws: RaftWireError(.unknownKind)) { try RaftMessage(decoding: unknown[...]) }
        var flags = RaftMessage(from: 1, to: 2, term: 1, body: .vote(pre: true, granted: true)).encoded()
        flags[25] = 4
        #expect(throws: RaftWireError(.malformed)) { try RaftMessage(decoding: flags[...]) }
        // Entries after prevIndex must start at prevIndex + 1 and follow one another.
        let skipping = RaftMessage(
            from: 1,
            to: 2,
            term: 1,
            body: .append(
                prevIndex: 1,
                prevTerm: 1,
                entries: [LogEntry(term: 1, index: 3, kind: .noop)],
                commit: 1,
                round: 1
            )
        )
        #expect(throws: RaftWireError(.malformed)) { try RaftMessage(decoding: skipping.encoded()[...]) }
        // A count far beyond the bytes is refused before anything is allocated.
        var huge = RaftMessage(
            from: 1,
            to: 2,
            term: 1,
            body: .append(prevIndex: 0, prevTerm: 0, entries: [], commit: 0, round: 0)
        ).encoded()
        huge.replaceSubrange(57..<61, with: [0xFF, 0xFF, 0xFF, 0xFF])
        #expect(throws: RaftWireError(.malformed)) { try RaftMessage(decoding: huge[...]) }
    }
}
