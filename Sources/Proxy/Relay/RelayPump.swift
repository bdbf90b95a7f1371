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
/// The rules are those of the channel relay (`RelayHandler`):
/// - a stream is read only while everything read from it before has been taken by its
///   partner (backpressure: at most one read's worth waits per direction);
/// - when a stream's input ends cleanly, what was read from it is written, then the
///   partner's output is ended (close_notify and FIN, or FIN) while the other
///   direction goes on; a stream is closed once its input has ended and its output
///   was ended after its last write;
/// - a reset, a TLS truncation or any failure ends the pair at once.
final class RelayPump<Stream: RelayStream> {
    enum Side: Int {
        case downstream = 0
        case upstream = 1

        var partner: Side { self == .downstream ? .upstream : .downstream }
    }

    /// How the pair stands after an event.
    enum Outcome: Equatable {
        case open
        /// Both directions ended cleanly; both streams are closed.
        case finished
        /// Ended by a failure; the caller closes whatever is still open.
        case aborted(FlowRecord.CloseReason, String)
    }

    private struct EndState {
        var readable = true
        var writable = true
        /// The poller reported the peer's end (FIN or error): read until the stream says
        /// so, since no further readiness will be reported.
        var hungUp = false
        var inputEnded = false
        var closingOutput = false
        var outputShut = false
        var closed = false
    }

    private let streams: [Stream]
    private var states = [EndState(), EndState()]
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
        states[Side.downstream.rawValue].inputEnded = downstreamEnded
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
        if failed && states[side.rawValue].inputEnded && !states[side.rawValue].closed {
            // Its input is not read any more, so no read would report the error.
            return .aborted(.reset, "\(side) failed after its input ended")
        }
        if hungUp { states[side.rawValue].hungUp = true }
        if readable || hungUp { states[side.rawValue].readable = true }
        if writable { states[side.rawValue].writable = true }
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
        // Runs on every event: two calls, not a loop over a fresh array.
        closeIfFinished(.downstream)
        closeIfFinished(.upstream)
        return states[0].closed && states[1].closed ? .finished : .open
    }

    /// Closes `side` once its input has ended and its output was shut.
    private func closeIfFinished(_ side: Side) {
        let state = states[side.rawValue]
        if state.inputEnded && state.outputShut && !state.closed {
            states[side.rawValue].closed = true
            streams[side.rawValue].close(.finished)
        }
    }

    /// Moves bytes from `source` to its partner until one of them would block.
    private func pump(from source: Side, scratch: UnsafeMutableRawBufferPointer) -> Outcome? {
        let target = source.partner
        let from = streams[source.rawValue]
        let to = streams[target.rawValue]
        guard !states[target.rawValue].closed else { return nil }
        if to.hasQueuedOutput {
            guard states[target.rawValue].writable else { return nil }
            switch sent(to.flush(), to: target) {
            case .all: break
            case .waiting: return nil
            case .failed(let outcome): return outcome
            }
        }
        for _ in 0..<Self.readBudget {
            if states[source.rawValue].inputEnded {
                return endOutput(of: target)
            }
            guard states[source.rawValue].readable else { return nil }
            switch from.read(into: scratch) {
            case .bytes(let n):
                count(n, from: source)
                let drained = from.isDrained && !states[source.rawValue].hungUp
                if drained { states[source.rawValue].readable = false }
                switch sent(to.write(UnsafeRawBufferPointer(rebasing: scratch[..<n])), to: target) {
                case .all: break
                case .waiting: return nil
                case .failed(let outcome): return outcome
                }
                if drained { return nil }
            case .wouldBlock:
                states[source.rawValue].readable = false
                return nil
            case .closed:
                states[source.rawValue].inputEnded = true
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
        if !states[side.rawValue].closingOutput {
            states[side.rawValue].closingOutput = true
            switch sent(stream.closeOutput(), to: side) {
            case .all: break
            case .waiting: return nil
            case .failed(let outcome): return outcome
            }
        }
        if !stream.hasQueuedOutput && !states[side.rawValue].outputShut {
            states[side.rawValue].outputShut = true
            stream.shutdownWrite()
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
            states[side.rawValue].writable = false
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
        for side in [Side.downstream, .upstream] where !states[side.rawValue].closed {
            states[side.rawValue].closed = true
            streams[side.rawValue].close(how)
        }
    }
}
