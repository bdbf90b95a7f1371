/// The rules of one relayed pair of connections, for both relay engines: the channel
/// relay (`RelayHandler`, two handlers in SwiftNIO pipelines) and the direct relay
/// (`RelayPump` on a `DirectRelayLoop`). Each engine reports what its connections did
/// and carries out the `Action`s that come back; the rules live here once, make no
/// system call and read no clock, and are tested on their own (`RelayStateTests`).
///
/// | event                     | rule                                                           |
/// |---------------------------|----------------------------------------------------------------|
/// | `inputEnded(side)`        | what was read from `side` is written, then its partner's output ends (`endOutput`: close_notify and FIN, or FIN) while the other direction goes on; `side` closes if its own output had ended |
/// | `outputEnded(side)`       | `side` closes if its input had ended                            |
/// | `closed(side)`            | a connection gone without both ends seen: after our own output ended it was the peer's FIN (the partner's output ends); otherwise a reset, so the partner closes too |
/// | `failed()` / `cut()`      | a reset, an error, the drain deadline, a revoking policy: both close at once |
/// | `writable(side, _)`       | back-pressure: a side is read only while its partner takes what is read (`requestRead`); a read held back resumes when the partner drains |
/// | `sweep(bytesMoved:)`      | called every quarter of the idle timeout: four in a row that saw no byte move (so between 1 and 1.25 idle timeouts) end the pair |
///
/// A pair is `finished` once both sides closed after both of their ends were seen.
struct RelayState {
    enum Side: Int, Sendable {
        /// The flow's source: the connection the relay was built for.
        case downstream = 0
        /// The connection the relay opened.
        case upstream = 1

        var partner: Side { self == .downstream ? .upstream : .downstream }
    }

    enum Action: Equatable, Sendable {
        /// Write what waits for `side`, then end its output.
        case endOutput(Side)
        /// Close `side`: both of its ends are done.
        case close(Side)
        /// Close both sides now, whatever waits (a failure, a cut, a reset, idleness).
        case abort
    }

    private struct End {
        var inputEnded = false
        /// `endOutput` was asked for: nothing more is written to this side.
        var outputEnding = false
        var outputEnded = false
        var closed = false
        var writable = true
        /// A read was held back because the partner was not writable.
        var readHeld = false
    }

    private var ends = [End(), End()]
    /// Ended by a failure, a cut or idleness, not cleanly.
    private(set) var aborted = false
    private var bytesAtLastSweep: UInt64 = 0
    private var quietSweeps = 0

    /// Sweeps in a row with no byte moved that end a pair: one idle timeout.
    static let sweepsPerIdleTimeout = 4

    init() {}

    // MARK: reading

    func isInputEnded(_ side: Side) -> Bool { ends[side.rawValue].inputEnded }
    func isOutputEnded(_ side: Side) -> Bool { ends[side.rawValue].outputEnded }
    func isClosed(_ side: Side) -> Bool { ends[side.rawValue].closed }
    var isFinished: Bool { ends[0].closed && ends[1].closed }

    // MARK: half-close

    /// `side`'s peer ended its input cleanly (FIN, or close_notify).
    mutating func inputEnded(_ side: Side) -> [Action] {
        guard !ends[side.rawValue].inputEnded, !aborted else { return [] }
        ends[side.rawValue].inputEnded = true
        var actions: [Action] = []
        let partner = side.partner
        if !ends[partner.rawValue].outputEnding, !ends[partner.rawValue].closed {
            ends[partner.rawValue].outputEnding = true
            actions.append(.endOutput(partner))
        }
        if ends[side.rawValue].outputEnded { actions += close(side) }
        return actions
    }

    /// `side`'s output was ended after its last write.
    mutating func outputEnded(_ side: Side) -> [Action] {
        guard !ends[side.rawValue].outputEnded, !aborted else { return [] }
        ends[side.rawValue].outputEnding = true
        ends[side.rawValue].outputEnded = true
        return ends[side.rawValue].inputEnded ? close(side) : []
    }

    /// `side`'s connection is gone (its channel went inactive).
    mutating func closed(_ side: Side) -> [Action] {
        let end = ends[side.rawValue]
        guard !end.closed else { return [] }
        ends[side.rawValue].closed = true
        if end.inputEnded && end.outputEnded || aborted { return [] }
        if end.outputEnded {
            // With our output already shut, the peer's FIN closes the connection with no
            // input-closed event first: everything it sent was read.
            ends[side.rawValue].inputEnded = true
            let partner = side.partner
            guard !ends[partner.rawValue].outputEnding, !ends[partner.rawValue].closed else { return [] }
            ends[partner.rawValue].outputEnding = true
            return [.endOutput(partner)]
        }
        return abort()
    }

    /// A reset, an error, a truncation on either side.
    mutating func failed() -> [Action] { abort() }

    /// The proxy ends the pair: drain deadline, revoking policy, shutdown.
    mutating func cut() -> [Action] { abort() }

    private mutating func close(_ side: Side) -> [Action] {
        guard !ends[side.rawValue].closed else { return [] }
        ends[side.rawValue].closed = true
        return [.close(side)]
    }

    private mutating func abort() -> [Action] {
        guard !aborted, !isFinished else { return [] }
        aborted = true
        ends[0].closed = true
        ends[1].closed = true
        return [.abort]
    }

    // MARK: back-pressure

    /// The engine wants to read `side`: whether it may now (its input goes on and its
    /// partner takes what is read). A read refused only because the partner is full is
    /// held until the partner drains (`writable` returns it).
    mutating func requestRead(_ side: Side) -> Bool {
        guard !ends[side.rawValue].inputEnded, !aborted else { return false }
        guard ends[side.partner.rawValue].writable else {
            ends[side.rawValue].readHeld = true
            return false
        }
        return true
    }

    /// `side` became writable or full. Returns the side whose held read may go now.
    mutating func writable(_ side: Side, _ writable: Bool) -> Side? {
        ends[side.rawValue].writable = writable
        let reader = side.partner
        guard writable, ends[reader.rawValue].readHeld else { return nil }
        ends[reader.rawValue].readHeld = false
        return ends[reader.rawValue].inputEnded || aborted ? nil : reader
    }

    func isWritable(_ side: Side) -> Bool { ends[side.rawValue].writable }

    // MARK: idleness

    /// Every quarter of the idle timeout, with the bytes moved both ways so far: true
    /// when the pair has been idle for a whole timeout and is ended (`abort`).
    mutating func sweep(bytesMoved: UInt64) -> Bool {
        guard !aborted, !isFinished else { return false }
        if bytesMoved != bytesAtLastSweep {
            bytesAtLastSweep = bytesMoved
            quietSweeps = 0
            return false
        }
        quietSweeps += 1
        guard quietSweeps >= Self.sweepsPerIdleTimeout else { return false }
        _ = abort()
        return true
    }
}
