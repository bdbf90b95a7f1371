import NIOConcurrencyHelpers
import NIOCore
import Testing

@testable import Proxy

/// The caps on unauthenticated connections, event by event, with no sockets.
@Suite struct HandshakeAdmissionTests {
    private func admission(total: Int, perSource: Int) -> (HandshakeAdmission, NIOLockedValueBox<[String]>) {
        (HandshakeAdmission(limits: .init(total: total, perSource: perSource)), NIOLockedValueBox([]))
    }

    @Test func aSourceIsCappedAndItsTicketsGiveTheirPlacesBackOnce() {
        let (admission, evicted) = admission(total: 10, perSource: 2)
        let first = try! admission.admit("10.0.0.1") { evicted.withLockedValue { $0.append("a") } }.get()
        _ = try! admission.admit("10.0.0.1") {}.get()
        #expect(throws: HandshakeAdmission.Refusal.perSource) { try admission.admit("10.0.0.1") {}.get() }
        #expect(admission.pending == 2)
        first.release()
        first.release()  // a second release changes nothing
        #expect(admission.pending == 1)
        #expect((try? admission.admit("10.0.0.1") {}.get()) != nil)
        #expect(evicted.withLockedValue { $0 }.isEmpty)
        #expect(admission.arrivals == 4)
    }

    /// With the total full, the source holding the most loses its oldest connection to
    /// a newcomer from elsewhere; a source may not evict one that holds no more than it.
    @Test func aFullTotalEvictsTheOldestOfTheLargestSource() {
        let (admission, evicted) = admission(total: 4, perSource: 3)
        for index in 0..<3 {
            _ = try! admission.admit("flood") { evicted.withLockedValue { $0.append("flood-\(index)") } }.get()
        }
        _ = try! admission.admit("peer-a") { evicted.withLockedValue { $0.append("peer-a") } }.get()
        let newcomer = admission.admit("peer-b") { evicted.withLockedValue { $0.append("peer-b") } }
        #expect((try? newcomer.get()) != nil)
        #expect(evicted.withLockedValue { $0 } == ["flood-0"])
        #expect(admission.pending == 4)
        // Now flood 2, a 1, b 1: a second newcomer evicts flood's next oldest; then
        // nobody holds more than a newcomer would, and the total refuses.
        _ = try! admission.admit("peer-c") {}.get()
        #expect(evicted.withLockedValue { $0 } == ["flood-0", "flood-1"])
        #expect(throws: HandshakeAdmission.Refusal.total) { try admission.admit("peer-d") {}.get() }
    }

    @Test func sourcesAreCountedByAddress() throws {
        let one = try SocketAddress(ipAddress: "2001:db8:1:2::1", port: 1)
        let neighbour = try SocketAddress(ipAddress: "2001:db8:1:2::2", port: 2)
        #expect(HandshakeAdmission.sourceKey(one) != HandshakeAdmission.sourceKey(neighbour))
        let v4 = try SocketAddress(ipAddress: "127.0.0.2", port: 4)
        #expect(HandshakeAdmission.sourceKey(v4) == "127.0.0.2")
    }

    @Test func theAllocatorIsTrimmedOnceWhenAFloodEnds() {
        var watch = FloodAftermath()
        // quiet, flooding, still flooding, over (trim), quiet again (not twice)
        let trims = [10, 50_000, 90_000, 90_020, 90_030].map { watch.observe(arrivals: UInt64($0)) }
        #expect(trims == [false, false, false, true, false])
    }
}
