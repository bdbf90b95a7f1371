import Raft
import Testing

@testable import RaftHost

/// The state a StatefulSet's group replicates, command by command: revisions and
/// swaps of the key-value data, one node per ordinal, and the workload's leader.
@Suite struct WorkloadStateTests {
    @Test func revisionsAreLogIndexesAndSwapsNameTheRevisionTheyExpect() {
        var state = WorkloadState()
        let value = Array("1".utf8)
        #expect(state.apply(.put(key: "a", value: value, ifRevision: 0), at: 3).0 == .done(revision: 3, previous: nil))
        #expect(state.bytes == 1 + 1 + WorkloadState.keyOverhead, "what the store's quota counts")
        // Created already: "only if absent" conflicts and changes nothing.
        let first = state.values["a"]
        #expect(state.apply(.put(key: "a", value: [9], ifRevision: 0), at: 4).0 == .conflict(current: first))
        #expect(state.apply(.put(key: "a", value: [2], ifRevision: 3), at: 5).0 == .done(revision: 5, previous: first))
        #expect(state.values["a"] == WorkloadState.Value(data: [2], createRevision: 3, modRevision: 5, version: 2))
        #expect(state.apply(.delete(key: "a", ifRevision: 3), at: 6).0 == .conflict(current: state.values["a"]))
        let (deleted, event) = state.apply(.delete(key: "a", ifRevision: 5), at: 7)
        #expect(
            deleted
                == .done(
                    revision: 7,
                    previous: WorkloadState.Value(data: [2], createRevision: 3, modRevision: 5, version: 2)
                )
        )
        #expect(event == WorkloadState.Event(kind: .delete, key: "a", value: nil, revision: 7))
        #expect(state.values.isEmpty && state.revision == 7 && state.bytes == 0)
        // Created again: a new creation revision and version 1.
        _ = state.apply(.put(key: "a", value: [3], ifRevision: nil), at: 8)
        #expect(state.values["a"] == WorkloadState.Value(data: [3], createRevision: 8, modRevision: 8, version: 1))
    }

    @Test func anOrdinalIsHeldByOneNodeAndOnlyItsHolderSpeaksForIt() {
        var state = WorkloadState()
        #expect(state.apply(.claim(ordinal: 0, node: "n1"), at: 1).0 == .done(revision: 1, previous: nil))
        #expect(state.apply(.claim(ordinal: 0, node: "n2"), at: 2).0 == .conflict(current: nil))
        #expect(state.apply(.claim(ordinal: 0, node: "n1"), at: 3).0 == .done(revision: 3, previous: nil))
        #expect(state.apply(.ready(ordinal: 0, node: "n2", ready: true), at: 4).0 == .conflict(current: nil))
        #expect(state.claims[0] == WorkloadState.Claim(node: "n1", ready: false, revision: 1))
        // Another node's release is a no-op; the holder's frees the ordinal.
        _ = state.apply(.release(ordinal: 0, node: "n2"), at: 5)
        #expect(state.claims[0]?.node == "n1")
        _ = state.apply(.release(ordinal: 0, node: "n1"), at: 6)
        #expect(state.claims[0] == nil)
        #expect(state.apply(.claim(ordinal: 0, node: "n2"), at: 7).0 == .done(revision: 7, previous: nil))
    }

    @Test func theLeaderIsAReadyOrdinalElectedBySwapAndLosesItWhenNotReady() {
        var state = WorkloadState()
        #expect(state.electionDue == nil, "nobody ready, nobody leads: nothing to do")
        _ = state.apply(.claim(ordinal: 1, node: "n1"), at: 1)
        _ = state.apply(.claim(ordinal: 0, node: "n2"), at: 2)
        // Not ready: cannot lead.
        #expect(state.apply(.elect(ordinal: 1, ifRevision: 0), at: 3).0 == .conflict(current: nil))
        _ = state.apply(.ready(ordinal: 1, node: "n1", ready: true), at: 4)
        #expect(state.electionDue == .some(1))
        #expect(state.apply(.elect(ordinal: 1, ifRevision: 0), at: 5).0 == .done(revision: 5, previous: nil))
        #expect(state.leadership == WorkloadState.Leadership(ordinal: 1, revision: 5))
        // A second election naming the old revision loses the race.
        #expect(state.apply(.elect(ordinal: 1, ifRevision: 0), at: 6).0 == .conflict(current: nil))
        // A lower ordinal getting ready does not unseat a ready leader.
        _ = state.apply(.ready(ordinal: 0, node: "n2", ready: true), at: 7)
        #expect(state.electionDue == nil)
        // The leader's pod stops being ready: no leader, and ordinal 0 is due.
        _ = state.apply(.ready(ordinal: 1, node: "n1", ready: false), at: 8)
        #expect(state.leadership == WorkloadState.Leadership(ordinal: nil, revision: 8))
        #expect(state.electionDue == .some(0))
        _ = state.apply(.elect(ordinal: 0, ifRevision: 8), at: 9)
        #expect(state.leadership == WorkloadState.Leadership(ordinal: 0, revision: 9), "the fencing token grew")
        _ = state.apply(.release(ordinal: 0, node: "n2"), at: 10)
        #expect(state.leadership.ordinal == nil)
    }

    @Test func aSnapshotHoldsEverything() throws {
        var state = WorkloadState()
        _ = state.apply(.put(key: "x", value: [1, 2], ifRevision: nil), at: 1)
        _ = state.apply(.put(key: "y/z", value: [], ifRevision: nil), at: 2)
        _ = state.apply(.claim(ordinal: 2, node: "n3"), at: 3)
        _ = state.apply(.ready(ordinal: 2, node: "n3", ready: true), at: 4)
        _ = state.apply(.elect(ordinal: 2, ifRevision: 0), at: 5)
        _ = state.apply(.member(id: 9, node: "n3", address: "10.0.0.3:15012"), at: 6)
        _ = state.apply(.member(id: 4, node: "n1", address: "10.0.0.1:15012"), at: 7)
        _ = state.apply(.member(id: 5, node: "n2", address: "10.0.0.2:15012"), at: 8)
        _ = state.apply(.member(id: 5, node: "n2", address: ""), at: 9)
        #expect(state.members.keys.sorted() == [4, 9], "an empty address forgets the member")
        #expect(try WorkloadState(snapshot: state.snapshot()) == state)
        #expect(try WorkloadState(snapshot: WorkloadState().snapshot()) == WorkloadState())
        // A key twice (or out of order) is no snapshot this store wrote: refused, not
        // counted twice (the fuzzer's find).
        var twice = ByteWriter()
        twice.u64(3)
        twice.u32(2)
        for _ in 0..<2 {
            twice.string("k")
            for number in [1, 1, 1] as [UInt64] { twice.u64(number) }
            twice.blob([7])
        }
        twice.u32(0)
        twice.byte(0)
        twice.u32(0)
        twice.u64(0)
        #expect(throws: WorkloadStateError.self) { try WorkloadState(snapshot: twice.bytes) }
        // Every cut is refused but one: the snapshot without its members section, as
        // agents wrote it before groups spanned nodes, which reads with no members.
        let bytes = state.snapshot()
        var readable: [Int] = []
        for length in 0..<bytes.count {
            guard let older = try? WorkloadState(snapshot: Array(bytes[..<length])) else { continue }
            readable.append(length)
            #expect(older.members.isEmpty && older.values == state.values && older.claims == state.claims)
        }
        #expect(readable.count == 1, "cuts that read: \(readable)")
    }

    static let commands: [WorkloadState.Command] = [
        .put(key: "k", value: [1], ifRevision: nil), .put(key: "ключ", value: [], ifRevision: 7),
        .delete(key: "k", ifRevision: nil), .delete(key: "k", ifRevision: 0),
        .claim(ordinal: 3, node: "node-1"), .release(ordinal: 0, node: "n"),
        .ready(ordinal: 1, node: "n", ready: true), .elect(ordinal: nil, ifRevision: 4),
        .elect(ordinal: 0, ifRevision: 0), .member(id: 0xFEED, node: "node-2", address: "10.250.0.2:15012"),
        .member(id: 1, node: "n", address: ""),
    ]

    @Test(arguments: commands)
    func everyCommandSurvivesItsEncodingAndAPrefixIsRefused(_ command: WorkloadState.Command) throws {
        let bytes = command.encoded()
        #expect(try WorkloadState.Command(decoding: bytes) == command)
        for length in 0..<bytes.count {
            #expect(throws: WorkloadStateError.self) { try WorkloadState.Command(decoding: Array(bytes[..<length])) }
        }
        #expect(throws: WorkloadStateError.self) { try WorkloadState.Command(decoding: bytes + [0]) }
    }
}
