import MeshAPI
import Testing

@testable import Proxy

/// The direct relay's byte-moving rules, event by event, on in-memory streams: no
/// socket, no thread, no clock.
@Suite struct RelayPumpTests {
    /// A scripted stream: what its peer has sent (`arrive`), how much it will take
    /// before it blocks (`room`), and a record of everything done to it.
    final class FakeStream: RelayStream {
        var inbound: [UInt8] = []
        /// The peer's end follows the inbound bytes.
        var peerEnded = false
        var readFailure: StreamStep?
        /// Bytes the stream takes before it would block; nil: unlimited.
        var room: Int?
        var written: [UInt8] = []
        var queued: [UInt8] = []
        var writeFailure: StreamStep?
        var reads = 0
        var drained = false
        /// What happened to the output, in order: "close_notify", "fin".
        var outputEvents: [String] = []
        var closed = false

        func arrive(_ bytes: [UInt8], end: Bool = false) {
            inbound += bytes
            peerEnded = peerEnded || end
        }

        func read(into buffer: UnsafeMutableRawBufferPointer) -> StreamStep {
            #expect(!closed, "read after close")
            reads += 1
            if let readFailure, inbound.isEmpty { return readFailure }
            if inbound.isEmpty { return peerEnded ? .closed : .wouldBlock }
            let n = min(buffer.count, inbound.count)
            buffer.copyBytes(from: inbound[..<n])
            inbound.removeFirst(n)
            // Like a socket: a short read says the stream is empty for now.
            drained = n < buffer.count
            return .bytes(n)
        }

        var isDrained: Bool { drained }

        func write(_ bytes: UnsafeRawBufferPointer) -> StreamStep {
            #expect(!outputEvents.contains("fin"), "write after FIN")
            if let writeFailure { return writeFailure }
            queued += bytes
            return flush() == .bytes(0) ? .bytes(bytes.count) : .wouldBlock
        }

        func flush() -> StreamStep {
            if let writeFailure { return writeFailure }
            let n = min(queued.count, room ?? .max)
            written += queued[..<n]
            queued.removeFirst(n)
            if room != nil { room! -= n }
            return queued.isEmpty ? .bytes(0) : .wouldBlock
        }

        var hasQueuedOutput: Bool { !queued.isEmpty }

        func closeOutput() -> StreamStep {
            outputEvents.append("close_notify")
            return flush()
        }

        func shutdownWrite() {
            #expect(queued.isEmpty, "FIN with bytes still queued")
            outputEvents.append("fin")
        }

        var closedAs: RelayClose?

        func close(_ how: RelayClose) {
            #expect(!closed, "closed twice")
            closed = true
            closedAs = how
        }
    }

    let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 16)

    func makePump() -> (RelayPump<FakeStream>, FakeStream, FakeStream) {
        let (down, up) = (FakeStream(), FakeStream())
        return (RelayPump(downstream: down, upstream: up, flow: nil), down, up)
    }

    /// A started pump, with the reads `start` made (both streams, found empty) forgotten.
    func startedPump() -> (RelayPump<FakeStream>, FakeStream, FakeStream) {
        let (pump, down, up) = makePump()
        #expect(pump.start(downstreamEnded: false, scratch: scratch) == .open)
        #expect(down.reads == 1 && up.reads == 1)
        down.reads = 0
        up.reads = 0
        return (pump, down, up)
    }

    func bytes(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31) &+ seed }
    }

    @Test func bytesMoveBothWaysInOrderAndAreCounted() {
        let (pump, down, up) = startedPump()
        let request = bytes(5000, seed: 1)
        down.arrive(request)
        #expect(pump.ready(.downstream, readable: true, writable: false, scratch: scratch) == .open)
        #expect(up.written == request)
        let response = bytes(3000, seed: 7)
        up.arrive(response)
        #expect(pump.ready(.upstream, readable: true, writable: false, scratch: scratch) == .open)
        #expect(down.written == response)
        #expect(pump.bytesRead.downstream == 5000 && pump.bytesRead.upstream == 3000)
    }

    /// A full partner stops reads from the source until it has taken what waits.
    @Test func aBlockedPartnerStopsTheSource() {
        let (pump, down, up) = startedPump()
        up.room = 1500
        let request = bytes(10_000, seed: 3)
        down.arrive(request)
        _ = pump.ready(.downstream, readable: true, writable: false, scratch: scratch)
        // Two reads of 1024: the second left bytes queued, so no third.
        #expect(down.reads == 2)
        #expect(up.written.count == 1500 && up.queued.count == 548)
        // More readiness from the source changes nothing while the partner is full.
        _ = pump.ready(.downstream, readable: true, writable: false, scratch: scratch)
        #expect(down.reads == 2)
        up.room = nil
        _ = pump.ready(.upstream, readable: false, writable: true, scratch: scratch)
        #expect(up.written == request)
        #expect(up.queued.isEmpty)
    }

    /// Half-close: the downstream input ends; the upstream output gets close_notify and
    /// FIN after the last byte, and the answer still flows back; each stream closes
    /// once both of its directions ended.
    @Test func halfCloseEndsThePartnersOutputAfterItsBytes() {
        let (pump, down, up) = startedPump()
        up.room = 100
        down.arrive(bytes(300, seed: 2), end: true)
        _ = pump.ready(.downstream, readable: true, writable: false, hungUp: true, scratch: scratch)
        #expect(up.outputEvents.isEmpty, "FIN must wait for the queued bytes")
        up.room = nil
        _ = pump.ready(.upstream, readable: false, writable: true, scratch: scratch)
        #expect(up.written == bytes(300, seed: 2))
        #expect(up.outputEvents == ["close_notify", "fin"])
        #expect(!down.closed && !up.closed)
        up.arrive(bytes(2000, seed: 9), end: true)
        #expect(pump.ready(.upstream, readable: true, writable: false, hungUp: true, scratch: scratch) == .finished)
        #expect(down.written == bytes(2000, seed: 9))
        #expect(down.outputEvents == ["close_notify", "fin"])
        #expect(down.closedAs == .finished && up.closedAs == .finished)
    }

    /// The poller reports a peer's FIN once, here together with the last bytes. The
    /// short read of those bytes must not be taken as "empty until the next report":
    /// no report will follow, so the end is read at once.
    @Test func aHangUpIsReadThroughAfterAShortRead() {
        let (pump, down, up) = startedPump()
        down.arrive(bytes(100, seed: 4), end: true)
        _ = pump.ready(.downstream, readable: true, writable: false, hungUp: true, scratch: scratch)
        #expect(up.written == bytes(100, seed: 4))
        #expect(up.outputEvents == ["close_notify", "fin"])
        #expect(down.reads == 2)
    }

    /// Without a hang-up, a short read means the stream is empty for now: it is not
    /// read again until the poller reports it (one read, not a second that would block).
    @Test func aShortReadWaitsForTheNextReport() {
        let (pump, down, up) = startedPump()
        down.arrive(bytes(100, seed: 4))
        _ = pump.ready(.downstream, readable: true, writable: false, scratch: scratch)
        #expect(down.reads == 1)
        #expect(up.written.count == 100)
    }

    @Test func anInputThatEndedDuringSetUpIsCarried() {
        let (pump, down, up) = makePump()
        let early = bytes(64, seed: 5)
        #expect(early.withUnsafeBytes { pump.forward($0, readFrom: .downstream) } == .open)
        #expect(pump.start(downstreamEnded: true, scratch: scratch) == .open)
        #expect(up.written == early)
        #expect(up.outputEvents == ["close_notify", "fin"])
        #expect(down.reads == 0, "an ended input is not read")
    }

    @Test(arguments: [
        (StreamStep.reset, FlowRecord.CloseReason.reset),
        (StreamStep.truncated, FlowRecord.CloseReason.error),
        (StreamStep.failed("boom"), FlowRecord.CloseReason.error),
    ])
    func aFailedReadAbortsThePair(failure: StreamStep, reason: FlowRecord.CloseReason) {
        let (pump, down, up) = startedPump()
        down.readFailure = failure
        guard case .aborted(let got, _) = pump.ready(.downstream, readable: true, writable: false, scratch: scratch)
        else {
            Issue.record("expected an abort")
            return
        }
        #expect(got == reason)
        #expect(up.outputEvents.isEmpty, "a failure is never passed on as a clean end")
        pump.closeAll(.failed)
        #expect(down.closedAs == .failed && up.closedAs == .failed)
    }

    @Test func aResetPartnerAbortsThePair() {
        let (pump, down, up) = startedPump()
        up.writeFailure = .reset
        down.arrive(bytes(10, seed: 1))
        guard case .aborted(.reset, _) = pump.ready(.downstream, readable: true, writable: false, scratch: scratch)
        else {
            Issue.record("expected an abort for a reset")
            return
        }
    }

    /// A reset on a side whose input already ended is seen by no read: the poller's
    /// error report ends the pair, rather than the idle timeout much later.
    @Test func anErrorOnAnEndedSideAbortsThePair() {
        let (pump, down, up) = startedPump()
        down.arrive([], end: true)
        _ = pump.ready(.downstream, readable: true, writable: false, hungUp: true, scratch: scratch)
        #expect(up.outputEvents == ["close_notify", "fin"])
        guard
            case .aborted(.reset, _) = pump.ready(
                .downstream,
                readable: false,
                writable: true,
                failed: true,
                scratch: scratch
            )
        else {
            Issue.record("expected an abort for the error")
            return
        }
    }

    /// A source that never runs dry yields after its budget and asks to be serviced
    /// again, instead of starving the loop's other relays.
    @Test func aBusySourceYieldsAfterItsBudget() {
        let (pump, down, up) = startedPump()
        let budget = RelayPump<FakeStream>.readBudget
        down.arrive(bytes(scratch.count * (budget + 3), seed: 6))
        _ = pump.ready(.downstream, readable: true, writable: false, scratch: scratch)
        #expect(down.reads == budget)
        #expect(pump.hasMoreWork)
        _ = pump.resume(scratch: scratch)
        #expect(up.written.count == scratch.count * (budget + 3))
        #expect(!pump.hasMoreWork)
    }
}
