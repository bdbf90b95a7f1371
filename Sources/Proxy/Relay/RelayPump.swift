import MeshAPI
import MeshTLS

/// What one call on a relayed stream achieved (shared with `TLSSocketStream`).
typealias StreamStep = TLSSocketStream.Step

/// How a relay's stream is closed, which its peer can tell apart.
enum RelayClose {
    /// Both directions ended cleanly: nothing more to say.
    case finished
    /// The proxy ends the connection (idle timeout, drain deadline, revoking policy,
    /// shutdown): a TLS peer gets close_notify, a plain peer a FIN, as from the channel
    /// relay.
    case cut
    /// The relay failed (a reset, a truncation, an error): a TLS peer gets no
    /// close_notify (it sees a truncation), a plain peer an RST, never a clean end.
    case failed
}

/// One end of a direct relay: a non-blocking byte stream, plain TCP or TLS.
protocol RelayStream: AnyObject {
    /// Reads what has arrived into `buffer`.
    func read(into buffer: UnsafeMutableRawBufferPointer) -> StreamStep
    /// After a read that returned bytes: the stream is empty until it reports readable.
    var isDrained: Bool { get }
    /// Takes all of `bytes`: `.bytes` when they are on the wire, `.wouldBlock` when
    /// some wait for the stream to become writable.
    func write(_ bytes: UnsafeRawBufferPointer) -> StreamStep
    /// Sends what waits; `.bytes(0)` once nothing does.
    func flush() -> StreamStep
    var hasQueuedOutput: Bool { get }
    /// Starts ending our output (TLS: queues close_notify) and sends what waits.
    func closeOutput() -> StreamStep
    /// Ends the output at the transport (TCP FIN), once nothing waits.
    func shutdownWrite()
    /// Releases the stream; no call follows.
    func close(_ how: RelayClose)
}

/// The byte-moving logic of a direct relay, for one pair of streams: what to read,
/// write, end and close when one of them becomes readable or writable. It makes no
/// system call of its own (the streams do) and reads no clock, so it runs the same
/// on sockets and on the in-memory streams of its tests.
///
/// The rules are `RelayState`'s, shared with the channel relay (`RelayHandler`): a
/// stream is read only while its partner takes what is read (at most one read's worth
/// waits per direction); a clean end of input ends the partner's output after what was
/// read is written, while the other direction goes on; a stream closes once both its
/// ends are done; a reset, a TLS truncation or any failure ends the pair at once. The
/// pump adds what only a poller needs: which stream was reported readable, and which
/// hung up.
final class RelayPump<Stream: RelayStream> {
    typealias Side = RelayState.Side

    /// How the pair stands after an event.
    enum Outcome: Equatable {
        case open
        /// Both directions ended cleanly; both streams are closed.
        case finished
        /// Ended by a failure; the caller closes whatever is still open.
        case aborted(FlowRecord.CloseReason, String)
    }

    /// What the poller reported of a stream.
    private struct Readiness {
        var readable = true
        /// The peer's end (FIN or error): read until the stream says so, since no
        /// further readiness will be reported.
        var hungUp = false
    }

    private let streams: [Stream]
    private var readiness = [Readiness(), Readiness()]
    /// The pair's rules: ends, back-pressure, idleness.
    private(set) var state = RelayState()
    /// `closeOutput` was called on the stream (TLS: close_notify queued).
    private var closingOutput = [false, false]
    /// The stream was released (the rules may have decided it earlier: an abort closes
    /// both at once, and `closeAll` carries that out).
    private var released = [false, false]
    /// Bytes read from each side (downstream is the flow's source).
    private(set) var bytesRead: (downstream: UInt64, upstream: UInt64) = (0, 0)
    private let flow: Flow?
    /// A pump stopped at its budget with bytes still to read: service the pair again
    /// without waiting for the poller (which reports a stream only when it changes).
    private(set) var hasMoreWork = false

    /// Reads per direction per service: a busy pair yields to the others after this many.
    static var readBudget: Int { 16 }

    init(downstream: Stream, upstream: Stream, flow: Flow?) {
        self.streams = [downstream, upstream]
        self.flow = flow
    }

    var bytesMoved: UInt64 { bytesRead.downstream &+ bytesRead.upstream }

    /// Starts the pair: `downstreamEnded` when the downstream input already ended
    /// while the relay was being set up. Both streams count as readable and writable
    /// until they say otherwise.
    func start(downstreamEnded: Bool, scratch: UnsafeMutableRawBufferPointer) -> Outcome {
        if downstreamEnded { carry(state.inputEnded(.downstream)) }
        return service(scratch: scratch)
    }

    /// Bytes the set-up read from `side` before the relay existed: written to its
    /// partner first.
    func forward(_ bytes: UnsafeRawBufferPointer, readFrom side: Side) -> Outcome {
        guard bytes.count > 0 else { return .open }
        count(bytes.count, from: side)
        if case .failed(let outcome) = sent(streams[side.partner.rawValue].write(bytes), to: side.partner) {
            return outcome
        }
        return .open
    }

    /// The poller reported `side` readable and/or writable, its peer's end, or an
    /// error on it.
    func ready(
        _ side: Side,
        readable: Bool,
        writable: Bool,
        hungUp: Bool = false,
        failed: Bool = false,
        scratch: UnsafeMutableRawBufferPointer
    ) -> Outcome {
        if failed && state.isInputEnded(side) && !state.isClosed(side) {
            // Its input is not read any more, so no read would report the error.
            return .aborted(.reset, "\(side) failed after its input ended")
        }
        if hungUp { readiness[side.rawValue].hungUp = true }
        if readable || hungUp { readiness[side.rawValue].readable = true }
        if writable { _ = state.writable(side, true) }
        return service(scratch: scratch)
    }

    /// Services the pair again after it yielded (`hasMoreWork`).
    func resume(scratch: UnsafeMutableRawBufferPointer) -> Outcome {
        service(scratch: scratch)
    }

    private func service(scratch: UnsafeMutableRawBufferPointer) -> Outcome {
        hasMoreWork = false
        if let failure = pump(from: .downstream, scratch: scratch) { return failure }
        if let failure = pump(from: .upstream, scratch: scratch) { return failure }
        return state.isFinished && !state.aborted ? .finished : .open
    }

    /// Carries out the clean-end actions of the pair's rules (an abort is returned as
    /// an outcome by the caller instead).
    private func carry(_ actions: [RelayState.Action]) {
        for action in actions {
            switch action {
            case .close(let side): release(side, .finished)
            case .endOutput, .abort: continue  // ended by `endOutput(of:)` as the pump reaches it
            }
        }
    }

    /// Moves bytes from `source` to its partner until one of them would block.
    private func pump(from source: Side, scratch: UnsafeMutableRawBufferPointer) -> Outcome? {
        let target = source.partner
        let from = streams[source.rawValue]
        let to = streams[target.rawValue]
        guard !state.isClosed(target) else { return nil }
        if to.hasQueuedOutput {
            guard state.isWritable(target) else { return nil }
            switch sent(to.flush(), to: target) {
            case .all: break
            case .waiting: return nil
            case .failed(let outcome): return outcome
            }
        }
        for _ in 0..<Self.readBudget {
            if state.isInputEnded(source) {
                return endOutput(of: target)
            }
            guard readiness[source.rawValue].readable, state.requestRead(source) else { return nil }
            switch from.read(into: scratch) {
            case .bytes(let n):
                count(n, from: source)
                let drained = from.isDrained && !readiness[source.rawValue].hungUp
                if drained { readiness[source.rawValue].readable = false }
                switch sent(to.write(UnsafeRawBufferPointer(rebasing: scratch[..<n])), to: target) {
                case .all: break
                case .waiting: return nil
                case .failed(let outcome): return outcome
                }
                if drained { return nil }
            case .wouldBlock:
                readiness[source.rawValue].readable = false
                return nil
            case .closed:
                carry(state.inputEnded(source))
            case .truncated:
                return .aborted(.error, "\(source) ended without close_notify (truncated)")
            case .reset:
                return .aborted(.reset, "\(source) reset the connection")
            case .failed(let reason):
                return .aborted(.error, "reading \(source): \(reason)")
            }
        }
        hasMoreWork = true
        return nil
    }

    /// The input feeding `side` ended: end its output once what waits is written.
    private func endOutput(of side: Side) -> Outcome? {
        let stream = streams[side.rawValue]
        guard !state.isOutputEnded(side), !state.isClosed(side) else { return nil }
        if !closingOutput[side.rawValue] {
            closingOutput[side.rawValue] = true
            switch sent(stream.closeOutput(), to: side) {
            case .all: break
            case .waiting: return nil
            case .failed(let outcome): return outcome
            }
        }
        if !stream.hasQueuedOutput {
            stream.shutdownWrite()
            carry(state.outputEnded(side))
        }
        return nil
    }

    private func count(_ bytes: Int, from side: Side) {
        switch side {
        case .downstream:
            bytesRead.downstream &+= UInt64(bytes)
            flow?.received(fromSource: bytes)
        case .upstream:
            bytesRead.upstream &+= UInt64(bytes)
            flow?.received(fromDestination: bytes)
        }
    }

    /// What a write, flush or output close on `side` left: everything on the wire,
    /// bytes waiting for the side to become writable (noted), or a failure.
    private enum Sent {
        case all
        case waiting
        case failed(Outcome)
    }

    private func sent(_ step: StreamStep, to side: Side) -> Sent {
        switch step {
        case .bytes:
            return .all
        case .wouldBlock:
            _ = state.writable(side, false)
            return .waiting
        case .reset:
            return .failed(.aborted(.reset, "\(side) reset the connection"))
        case .failed(let reason):
            return .failed(.aborted(.error, "writing \(side): \(reason)"))
        case .closed, .truncated:
            return .failed(.aborted(.error, "writing \(side): unexpected \(step)"))
        }
    }

    /// Closes the streams still open (after an abort, or to cut the pair).
    func closeAll(_ how: RelayClose) {
        _ = state.cut()
        release(.downstream, how)
        release(.upstream, how)
    }

    private func release(_ side: Side, _ how: RelayClose) {
        guard !released[side.rawValue] else { return }
        released[side.rawValue] = true
        streams[side.rawValue].close(how)
    }

    /// Every quarter of the idle timeout: true when no byte moved for a whole timeout,
    /// and the caller ends the pair.
    func sweep() -> Bool {
        state.sweep(bytesMoved: bytesMoved)
    }
}
