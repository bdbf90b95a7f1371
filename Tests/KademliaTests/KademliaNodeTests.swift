import Kademlia
import KademliaSimulation
import Testing

/// The state machine event by event: what goes in, exactly what comes out.
@Suite struct KademliaNodeTests {
    static let signatures = SimulatedSignatures(secret: 42)
    static let publisher = NodeID(4, 4, 4, 4)
    static let second: UInt64 = 1_000_000_000

    static func node(_ id: NodeID, client: Bool = false, k: Int = 20) -> KademliaNode {
        var configuration = KademliaNode.Configuration()
        configuration.isClient = client
        configuration.k = k
        return KademliaNode(
            contact: Contact(id: id, address: "n\(id.words.0)"),
            configuration: configuration,
            seed: 1,
            validator: signatures
        )
    }

    static func sends(_ directives: [KademliaNode.Directive]) -> [(Envelope, Contact)] {
        directives.compactMap { if case .send(let envelope, let to) = $0 { (envelope, to) } else { nil } }
    }

    let a = Contact(id: NodeID(1, 0, 0, 0), address: "n1")
    let b = Contact(id: NodeID(2, 0, 0, 0), address: "n2")
    let c = Contact(id: NodeID(3, 0, 0, 0), address: "n3")

    @Test func aServerAnswersPingAndLearnsTheSender() {
        var server = Self.node(b.id)
        let out = server.receive(Envelope(from: a, requestID: 9, message: .ping), now: 0)
        #expect(out == [.send(Envelope(from: b, requestID: 9, message: .pong), to: a)])
        #expect(server.table.contains(a.id))
    }

    @Test func aClientIsAnsweredButNeverEntersATable() {
        var server = Self.node(b.id)
        let out = server.receive(Envelope(from: a, requestID: 1, message: .findNode(c.id), fromClient: true), now: 0)
        #expect(out == [.send(Envelope(from: b, requestID: 1, message: .nodes([])), to: a)])
        #expect(!server.table.contains(a.id))
        var client = Self.node(a.id, client: true)
        #expect(
            client.receive(Envelope(from: b, requestID: 1, message: .ping), now: 0).isEmpty,
            "clients answer nothing"
        )
    }

    @Test func aLookupAsksAlphaPeersThenFinishesWhenTheClosestHaveAnswered() {
        var node = Self.node(a.id)
        _ = node.bootstrap(seeds: [b], now: 0)  // asks b for our own ID
        let (lookup, start) = node.findNode(c.id, now: Self.second)
        let requests = Self.sends(start)
        #expect(requests.count == 1 && requests[0].1 == b && requests[0].0.message == .findNode(c.id))
        #expect(start.contains(.wake(at: 2 * Self.second)), "a timer for the request's deadline")

        // b names c; the lookup asks c.
        let next = node.receive(
            Envelope(from: b, requestID: requests[0].0.requestID, message: .nodes([c])),
            now: Self.second + 1
        )
        let toC = Self.sends(next)
        #expect(toC.count == 1 && toC[0].1 == c)
        // c answers with nobody new: done, c closest.
        let done = node.receive(
            Envelope(from: c, requestID: toC[0].0.requestID, message: .nodes([b])),
            now: Self.second + 2
        )
        guard case .finished(let id, let result)? = done.last else {
            Issue.record("no result: \(done)")
            return
        }
        #expect(id == lookup)
        #expect(result.closest.map(\.id) == [c.id, b.id])
        #expect(result.hops == 2 && result.messages == 2)
    }

    @Test func aSilentPeerIsAskedTwiceThenFailedAndTheLookupEndsWithoutIt() {
        var node = Self.node(a.id)
        _ = table(of: &node, knowing: [b])
        let (_, start) = node.findNode(c.id, now: 0)
        let first = Self.sends(start)
        #expect(first.count == 1)
        let retry = Self.sends(node.tick(now: Self.second))
        #expect(retry.count == 1 && retry[0].1 == b && retry[0].0.requestID != first[0].0.requestID)
        let end = node.tick(now: 2 * Self.second)
        guard case .finished(_, let result)? = end.last else {
            Issue.record("no result: \(end)")
            return
        }
        #expect(result.closest.isEmpty && result.messages == 1)
        #expect(node.pendingRequests == 0 && node.activeLookups == 0)
    }

    /// A peer that vanished costs one lookup its timeouts: the next lookup neither
    /// asks it (though another peer still names it) nor waits for it, until it is
    /// heard from again.
    @Test func aPeerThatTimedOutIsNotAskedAgainUntilItIsHeardFrom() {
        let d = Contact(id: NodeID(4, 0, 0, 0), address: "n4")
        var node = Self.node(a.id)
        _ = table(of: &node, knowing: [b, c])
        func lookup(at now: UInt64) -> (asked: [Contact], node: KademliaNode.Directive?) {
            let (_, start) = node.findNode(d.id, now: now)
            let asked = Self.sends(start)
            var last: KademliaNode.Directive?
            for (envelope, to) in asked where to == b {
                last =
                    node.receive(Envelope(from: b, requestID: envelope.requestID, message: .nodes([c])), now: now).last
            }
            return (asked.map(\.1), last)
        }
        // First: c is asked, twice, and the lookup ends only once c failed.
        let first = lookup(at: 0)
        #expect(Set(first.asked) == [b, c])
        if case .finished? = first.node { Issue.record("finished before c timed out") }
        #expect(Self.sends(node.tick(now: Self.second)).map(\.1) == [c], "asked again")
        guard case .finished? = node.tick(now: 2 * Self.second).last else { return #expect(Bool(false)) }
        // Next: only b, and done as b answers, although b names c.
        let second = lookup(at: 3 * Self.second)
        #expect(second.asked == [b])
        guard case .finished(_, let result)? = second.node else { return #expect(Bool(false), "\(second)") }
        #expect(result.closest == [b])
        #expect(result.skipped > 0, "the answer says it left c out")
        // Heard from: asked again.
        _ = node.receive(Envelope(from: c, requestID: 0, message: .ping), now: 4 * Self.second)
        #expect(Set(lookup(at: 5 * Self.second).asked) == [b, c])
    }

    /// The quarantine ends after 30 s; and when every contact is in it (this node's own
    /// link was down), all are asked rather than none.
    @Test func theQuarantineEndsAndNeverLeavesALookupWithNobodyToAsk() {
        var node = Self.node(a.id)
        _ = table(of: &node, knowing: [b])
        _ = node.findNode(c.id, now: 0)
        _ = node.tick(now: Self.second)
        _ = node.tick(now: 2 * Self.second)  // b failed twice: quarantined
        let (_, alone) = node.findNode(c.id, now: 3 * Self.second)
        #expect(Self.sends(alone).map(\.1) == [b], "b is the only contact: asked anyway")
        _ = node.tick(now: 4 * Self.second)  // failed again (no retry): still in the table
        var later = Self.node(a.id)
        _ = table(of: &later, knowing: [b, c])
        _ = later.findNode(NodeID(9, 0, 0, 0), now: 0)
        _ = later.tick(now: Self.second)
        _ = later.tick(now: 2 * Self.second)  // b and c quarantined at 1 s and 2 s
        _ = later.receive(Envelope(from: b, requestID: 0, message: .ping), now: 3 * Self.second)
        let (_, during) = later.findNode(NodeID(9, 0, 0, 0), now: 10 * Self.second)
        #expect(Self.sends(during).map(\.1) == [b], "c is in its quarantine")
        let (_, after) = later.findNode(NodeID(9, 0, 0, 0), now: 33 * Self.second)
        #expect(Set(Self.sends(after).map(\.1)) == [b, c], "30 s later c is asked again")
    }

    @Test func responsesNobodyAskedForAreRejectedAndCounted() {
        var node = Self.node(a.id)
        #expect(node.receive(Envelope(from: b, requestID: 77, message: .nodes([c])), now: 0).isEmpty)
        #expect(node.rejected["unsolicited_response"] == 1)
        _ = node.receive(Envelope(from: a, requestID: 1, message: .ping), now: 0)
        #expect(node.rejected["own_id"] == 1)
    }

    @Test func storesAcceptOnlyValidFreshRecordsThatDoNotRollBack() {
        var server = Self.node(b.id)
        let key = NodeID(9, 9, 9, 9)
        func offer(_ record: Record) -> Bool {
            let out = server.receive(Envelope(from: a, requestID: 1, message: .store(record)), now: 10 * Self.second)
            return out.contains(.send(Envelope(from: b, requestID: 1, message: .stored(true)), to: a))
        }
        let v2 = Self.signatures.sign(
            key: key,
            publisher: Self.publisher,
            payload: [1],
            sequence: 2,
            expires: 100 * Self.second
        )
        #expect(offer(v2))
        var forged = v2
        forged.value[0] = 7
        #expect(!offer(forged))
        #expect(
            !offer(
                Self.signatures.sign(
                    key: key,
                    publisher: Self.publisher,
                    payload: [1],
                    sequence: 1,
                    expires: 100 * Self.second
                )
            )
        )
        #expect(
            !offer(
                Self.signatures.sign(
                    key: key,
                    publisher: Self.publisher,
                    payload: [1],
                    sequence: 3,
                    expires: 10 * Self.second
                )
            )
        )
        #expect(
            offer(
                Self.signatures.sign(
                    key: key,
                    publisher: Self.publisher,
                    payload: [2],
                    sequence: 3,
                    expires: 100 * Self.second
                )
            )
        )
        #expect(server.records(under: key).map(\.sequence) == [3])
        #expect(server.rejected == ["invalid_record": 1, "rolled_back_record": 1, "expired_record": 1])
        // A value lookup for it is answered with the record.
        let answer = server.receive(Envelope(from: a, requestID: 5, message: .findValue(key)), now: 11 * Self.second)
        #expect(
            answer.contains {
                if case .send(let envelope, _) = $0, case .values(let records) = envelope.message {
                    records.map(\.sequence) == [3]
                } else {
                    false
                }
            }
        )
    }

    @Test func aKeyKeepsOneRecordPerPublisherAndALookupMergesWhatHoldersKeep() {
        let key = NodeID(9, 9, 9, 9)
        let one = Self.signatures.sign(
            key: key,
            publisher: NodeID(1, 0, 0, 0),
            payload: [1],
            sequence: 1,
            expires: 100 * Self.second
        )
        let two = Self.signatures.sign(
            key: key,
            publisher: NodeID(2, 0, 0, 0),
            payload: [2],
            sequence: 4,
            expires: 100 * Self.second
        )
        let twoOlder = Self.signatures.sign(
            key: key,
            publisher: NodeID(2, 0, 0, 0),
            payload: [2],
            sequence: 3,
            expires: 100 * Self.second
        )
        // b holds one and the newer two; c holds only the older two.
        var node = Self.node(a.id)
        _ = node.receive(Envelope(from: b, requestID: 0, message: .ping), now: 0)
        _ = node.receive(Envelope(from: c, requestID: 0, message: .ping), now: 0)
        let (lookup, start) = node.findValue(key, now: 0)
        var done: LookupResult?
        for (envelope, to) in Self.sends(start) {
            let records = to == b ? [one, two] : [twoOlder]
            for case .finished(let id, let result) in node.receive(
                Envelope(from: to, requestID: envelope.requestID, message: .values(records)),
                now: 1
            ) where id == lookup {
                done = result
            }
        }
        #expect(done?.records == [one, two], "the newest record of each publisher, from either holder")

        var holder = Self.node(b.id)
        for publisher in 0..<UInt64(KademliaNode.maximumPublishersPerKey + 1) {
            let record = Self.signatures.sign(
                key: key,
                publisher: NodeID(publisher, 1, 0, 0),
                payload: [],
                sequence: 1,
                expires: 100 * Self.second
            )
            _ = holder.receive(Envelope(from: a, requestID: 1, message: .store(record)), now: 0)
        }
        #expect(holder.records(under: key).count == KademliaNode.maximumPublishersPerKey)
        #expect(holder.rejected["key_full"] == 1)
    }

    /// A republish within `holderReuse` of the lookup stores on the same holders
    /// without a lookup; a holder that does not accept is dropped from them, and too
    /// few left send the next one to a lookup.
    @Test func aRepublishReusesTheHoldersFoundUntilOneFails() {
        let key = NodeID(9, 9, 9, 9)
        func record(_ sequence: UInt64) -> Record {
            Self.signatures.sign(
                key: key,
                publisher: a.id,
                payload: [7],
                sequence: sequence,
                expires: 600 * Self.second
            )
        }
        // k = 1: b alone is a full set of holders (a smaller set is never reused).
        var node = Self.node(a.id, k: 1)
        _ = node.receive(Envelope(from: b, requestID: 0, message: .ping), now: 0)
        // The first put looks the key up (b knows nobody closer), then stores on b.
        let lookup = Self.sends(node.put(record(1), now: 0))
        #expect(lookup.map(\.0.message) == [.findNode(key)])
        let stores = Self.sends(
            node.receive(Envelope(from: b, requestID: lookup[0].0.requestID, message: .nodes([])), now: 1)
        )
        #expect(stores.map(\.0.message) == [.store(record(1))] && stores[0].1 == b)
        #expect(
            node.receive(Envelope(from: b, requestID: stores[0].0.requestID, message: .stored(true)), now: 2)
                == [.published(key: key, replicas: 1)]
        )
        // Ten seconds later: straight to b, no lookup.
        let again = Self.sends(node.put(record(2), now: 10 * Self.second))
        #expect(again.map(\.0.message) == [.store(record(2))] && again[0].1 == b)
        // b refuses it: b is dropped, fewer than half of k are left (none), and the
        // next put looks the holders up again.
        _ = node.receive(
            Envelope(from: b, requestID: again[0].0.requestID, message: .stored(false)),
            now: 11 * Self.second
        )
        #expect(Self.sends(node.put(record(3), now: 20 * Self.second)).map(\.0.message) == [.findNode(key)])
        // And after `holderReuse`, a lookup even when every store was accepted.
        var fresh = Self.node(a.id, k: 1)
        _ = fresh.receive(Envelope(from: b, requestID: 0, message: .ping), now: 0)
        let first = Self.sends(fresh.put(record(1), now: 0))
        let stored = Self.sends(
            fresh.receive(Envelope(from: b, requestID: first[0].0.requestID, message: .nodes([])), now: 1)
        )
        _ = fresh.receive(Envelope(from: b, requestID: stored[0].0.requestID, message: .stored(true)), now: 2)
        let late = fresh.configuration.holderReuse + 1
        #expect(Self.sends(fresh.put(record(2), now: late)).map(\.0.message) == [.findNode(key)])
    }

    @Test func aLoneNodeFindsWhatItHoldsItself() {
        // A one-node DHT (one agent on one machine): the record put is held locally and a
        // value lookup, which has nobody to ask, still returns it.
        var lone = Self.node(a.id)
        _ = lone.bootstrap(seeds: [], now: 0)
        let key = NodeID(9, 9, 9, 9)
        let record = Self.signatures.sign(
            key: key,
            publisher: Self.publisher,
            payload: [1],
            sequence: 1,
            expires: 100 * Self.second
        )
        _ = lone.put(record, now: Self.second)
        let (id, directives) = lone.findValue(key, now: 2 * Self.second)
        #expect(Self.sends(directives).isEmpty)
        let finished = directives.compactMap {
            if case .finished(let lookup, let result) = $0 { (lookup, result) } else { nil }
        }
        #expect(finished.count == 1 && finished.first?.0 == id)
        #expect(finished.first?.1.records == [record])
        // Once expired, it is not returned.
        let later = lone.findValue(key, now: 200 * Self.second).directives
        #expect(later.contains { if case .finished(_, let result) = $0 { result.records.isEmpty } else { false } })
    }

    @Test func aHeldRecordExpiresAtMaintenance() {
        var server = Self.node(b.id)
        let key = NodeID(9, 9, 9, 9)
        _ = server.receive(
            Envelope(
                from: a,
                requestID: 1,
                message: .store(
                    Self.signatures.sign(
                        key: key,
                        publisher: Self.publisher,
                        payload: [1],
                        sequence: 1,
                        expires: 30 * Self.second
                    )
                )
            ),
            now: 0
        )
        #expect(!server.records(under: key).isEmpty)
        _ = server.bootstrap(seeds: [], now: 0)  // schedules maintenance at 60 s
        _ = server.tick(now: 60 * Self.second)
        #expect(server.records(under: key).isEmpty)
    }

    private func table(of node: inout KademliaNode, knowing contacts: [Contact]) -> Bool {
        for contact in contacts {
            _ = node.receive(Envelope(from: contact, requestID: 0, message: .ping), now: 0)
        }
        return true
    }
}

/// The lookup's bookkeeping on its own.
@Suite struct LookupBoundsTests {
    /// A contact whose distance to `target` has `zeros` leading zero bits.
    static func contact(near target: NodeID, zeros: Int, random: inout Mixer) -> Contact {
        let noise = (random.next() >> zeros) | ((UInt64(1) << 63) >> zeros)
        return Contact(id: target ^ NodeID(noise, random.next(), random.next(), random.next()), address: "c")
    }

    @Test func aLookupStillFinishesWhenAnUnansweredPeerIsCrowdedOut() {
        var random = Mixer(seed: 5)
        let target = NodeID.random(using: &random)
        var node = KademliaNode(
            contact: Contact(id: target ^ NodeID(UInt64.max, 0, 0, 0), address: "own"),
            seed: 1,
            validator: SimulatedSignatures(secret: 1)
        )
        for _ in 0..<3 {
            _ = node.receive(
                Envelope(from: Self.contact(near: target, zeros: 1, random: &random), requestID: 0, message: .ping),
                now: 0
            )
        }
        var (lookup, directives) = node.findNode(target, now: 0)
        var outstanding = directives.compactMap { if case .send(let e, let to) = $0 { (e, to) } else { nil } }
        let silent = outstanding.removeFirst()  // never answers (and no timer runs)
        var zeros = 2
        var result: LookupResult?
        for round in 0..<40 {
            var next: [KademliaNode.Directive] = []
            for (envelope, to) in outstanding {
                // Eight rounds of ever closer contacts push the silent peer's entry past
                // the lookup's bound; then answers bring nothing new.
                let closer =
                    round < 8 ? (0..<20).map { _ in Self.contact(near: target, zeros: zeros, random: &random) } : []
                zeros += 1
                next += node.receive(Envelope(from: to, requestID: envelope.requestID, message: .nodes(closer)), now: 1)
            }
            for case .finished(let id, let finished) in next where id == lookup { result = finished }
            outstanding = next.compactMap { if case .send(let e, let to) = $0 { (e, to) } else { nil } }
            if result != nil || outstanding.isEmpty { break }
        }
        #expect(result != nil, "finished without the silent peer \(silent.1)")
        #expect(result?.closest.count == 20)
        directives = []
        lookup = 0
    }
}
