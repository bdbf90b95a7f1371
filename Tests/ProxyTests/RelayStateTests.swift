import Testing

@testable import Proxy

/// The relay's rules on their own, event by event, with exact actions: the same rules
/// both relay engines carry out (`RelayHandler`, `RelayPump`).
@Suite struct RelayStateTests {
    @Test func aHalfCloseEndsThePartnersOutputAndTheOtherDirectionGoesOn() {
        var state = RelayState()
        #expect(state.inputEnded(.downstream) == [.endOutput(.upstream)])
        #expect(state.inputEnded(.downstream) == [], "reported once")
        #expect(state.requestRead(.upstream) == true, "the other direction goes on")
        #expect(state.requestRead(.downstream) == false, "an ended input is not read")
        #expect(state.outputEnded(.upstream) == [], "upstream's input has not ended")
        #expect(state.inputEnded(.upstream) == [.endOutput(.downstream), .close(.upstream)])
        #expect(!state.isFinished)
        #expect(state.outputEnded(.downstream) == [.close(.downstream)])
        #expect(state.isFinished && !state.aborted)
        #expect(state.closed(.downstream) == [], "closed as planned")
        #expect(state.closed(.upstream) == [])
    }

    @Test func aSideClosesOnlyOnceBothOfItsEndsAreDone() {
        var state = RelayState()
        #expect(state.inputEnded(.upstream) == [.endOutput(.downstream)])
        #expect(state.outputEnded(.downstream) == [])
        #expect(state.inputEnded(.downstream) == [.endOutput(.upstream), .close(.downstream)])
    }

    /// With our output shut, the peer's FIN arrives as the connection closing, with no
    /// input-closed event: it is a clean end, and the partner's output ends.
    @Test func aPeersFinAfterOurOutputEndedIsACleanEnd() {
        var state = RelayState()
        #expect(state.inputEnded(.upstream) == [.endOutput(.downstream)])
        #expect(state.outputEnded(.downstream) == [])
        #expect(state.closed(.downstream) == [.endOutput(.upstream)])
        #expect(!state.aborted)
    }

    @Test func aConnectionGoneBeforeItsEndsIsAReset() {
        var state = RelayState()
        #expect(state.closed(.upstream) == [.abort])
        #expect(state.aborted && state.isFinished)
        #expect(state.closed(.downstream) == [], "nothing after an abort")
        #expect(state.inputEnded(.downstream) == [])
        #expect(state.requestRead(.downstream) == false)
    }

    @Test(arguments: [true, false])
    func aFailureOrACutClosesBothOnce(failure: Bool) {
        var state = RelayState()
        #expect(state.inputEnded(.downstream) == [.endOutput(.upstream)])
        let actions = failure ? state.failed() : state.cut()
        #expect(actions == [.abort])
        #expect(state.failed() == [])
        #expect(state.cut() == [])
        #expect(state.outputEnded(.upstream) == [], "a late write completion changes nothing")
    }

    @Test func aFinishedPairIsNotAbortedByALateCut() {
        var state = RelayState()
        _ = state.inputEnded(.downstream)
        _ = state.inputEnded(.upstream)
        _ = state.outputEnded(.downstream)
        _ = state.outputEnded(.upstream)
        #expect(state.isFinished)
        #expect(state.cut() == [])
        #expect(!state.aborted)
    }

    @Test func aFullPartnerHoldsTheReadUntilItDrains() {
        var state = RelayState()
        #expect(state.requestRead(.downstream) == true)
        #expect(state.writable(.upstream, false) == nil)
        #expect(state.requestRead(.downstream) == false, "upstream is full")
        #expect(state.requestRead(.upstream) == true, "downstream still takes bytes")
        #expect(state.writable(.upstream, true) == .downstream, "the held read goes")
        #expect(state.writable(.upstream, true) == nil, "once")
        _ = state.writable(.upstream, false)
        #expect(state.requestRead(.downstream) == false)
        _ = state.inputEnded(.downstream)
        #expect(state.writable(.upstream, true) == nil, "an ended input is not read again")
    }

    /// Swept every quarter of the idle timeout: four sweeps in a row with no byte moved
    /// end the pair; any movement starts the count again.
    @Test func fourQuietSweepsEndThePair() {
        var state = RelayState()
        var ended: [Bool] = []
        for moved: UInt64 in [10, 10, 10, 10, 11, 11, 11, 11, 11, 11] {
            ended.append(state.sweep(bytesMoved: moved))
        }
        // Moved, three quiet; moved (the count starts again), four quiet: ended; then
        // nothing more.
        #expect(ended == [false, false, false, false, false, false, false, false, true, false])
        #expect(state.aborted)
    }
}
