import Kademlia
import KademliaSimulation
import Testing

@Suite struct NodeIDTests {
    @Test func bucketsAreTheHighestDifferingBit() {
        let zero = NodeID(0, 0, 0, 0)
        #expect(zero.bucket(of: zero) == nil)
        #expect(zero.bucket(of: NodeID(0, 0, 0, 1)) == 0)
        #expect(zero.bucket(of: NodeID(0, 0, 0, 0x80)) == 7)
        #expect(zero.bucket(of: NodeID(0, 0, 1, 0)) == 64)
        #expect(zero.bucket(of: NodeID(1 << 63, 0, 0, 0)) == 255)
        #expect(NodeID(5, 0, 0, 0).bucket(of: NodeID(4, 0, 0, 0)) == 192)
    }

    @Test func aRandomIDInABucketLandsInThatBucket() {
        var random = Mixer(seed: 7)
        for _ in 0..<200 {
            let own = NodeID.random(using: &random)
            let bucket = Int(random.next() % 256)
            #expect(own.bucket(of: own.random(inBucket: bucket, using: &random)) == bucket)
        }
    }

    @Test func bytesRoundTrip() throws {
        var random = Mixer(seed: 3)
        let id = NodeID.random(using: &random)
        #expect(id.bytes.count == 32)
        #expect(try #require(NodeID(bytes: id.bytes)) == id)
        #expect(NodeID(bytes: [1, 2, 3]) == nil)
    }
}

@Suite struct RoutingTableTests {
    static let own = NodeID(0, 0, 0, 0)

    /// A contact in bucket 255 of `own` (the far half), numbered.
    static func far(_ number: UInt64) -> Contact {
        Contact(id: NodeID(1 << 63 | number, 0, 0, 0), address: "far-\(number)")
    }

    @Test func aFullBucketProbesItsOldestAndKeepsItWhenItAnswers() {
        var table = RoutingTable(own: Self.own, k: 3)
        #expect((0..<3).map { table.observe(Self.far($0)) } == [.inserted, .inserted, .inserted])
        #expect(table.observe(Self.far(0)) == .refreshed)  // 0 is now the most recent
        #expect(table.observe(Self.far(3)) == .probe(Self.far(1)))
        #expect(table.observe(Self.far(4)) == .cached, "one probe at a time")
        #expect(table.observe(Self.far(1)) == .refreshed, "the probed contact answered")
        #expect(table.contacts.map(\.address) == ["far-2", "far-0", "far-1"])
        #expect(!table.contains(Self.far(3).id) && !table.contains(Self.far(4).id))
    }

    /// While even the least recently heard contact of a full bucket was heard within
    /// `quiet`, a newcomer waits in the cache without a probe.
    @Test func aFullBucketHeardFromLatelyProbesNobody() {
        let second: UInt64 = 1_000_000_000
        var table = RoutingTable(own: Self.own, k: 2)
        _ = table.observe(Self.far(0), now: 0)
        _ = table.observe(Self.far(1), now: 5 * second)
        #expect(table.observe(Self.far(2), now: 30 * second, quiet: 60 * second) == .cached)
        #expect(table.observe(Self.far(3), now: 60 * second, quiet: 60 * second) == .probe(Self.far(0)))
        #expect(table.observe(Self.far(4), now: 61 * second) == .cached, "one probe at a time")
    }

    @Test func aProbedContactThatDoesNotAnswerMakesRoomForTheNewestReplacement() {
        var table = RoutingTable(own: Self.own, k: 2)
        _ = table.observe(Self.far(0))
        _ = table.observe(Self.far(1))
        #expect(table.observe(Self.far(2)) == .probe(Self.far(0)))
        #expect(table.observe(Self.far(3)) == .cached)
        table.failed(Self.far(0).id)
        #expect(table.contacts.map(\.address) == ["far-1", "far-3"])
    }

    @Test func anUnprobedContactLeavesAfterThreeFailuresInARow() {
        var table = RoutingTable(own: Self.own, k: 5)
        _ = table.observe(Self.far(0))
        table.failed(Self.far(0).id)
        table.failed(Self.far(0).id)
        _ = table.observe(Self.far(0))  // it spoke: the count starts again
        table.failed(Self.far(0).id)
        table.failed(Self.far(0).id)
        #expect(table.contains(Self.far(0).id))
        table.failed(Self.far(0).id)
        #expect(!table.contains(Self.far(0).id))
    }

    @Test func closestMatchesSortingEveryContact() {
        var random = Mixer(seed: 11)
        let own = NodeID.random(using: &random)
        var table = RoutingTable(own: own)
        for number in 0..<2000 {
            _ = table.observe(Contact(id: NodeID.random(using: &random), address: "\(number)"))
        }
        for _ in 0..<50 {
            let target = NodeID.random(using: &random)
            let expected = table.contacts.sorted { target.isCloser($0.id, than: $1.id) }.prefix(20)
            #expect(table.closest(to: target, count: 20) == Array(expected))
        }
        #expect(table.closest(to: own, count: 0).isEmpty)
    }
}
