/// One Kademlia node as a pure state machine: every event (a message, a timer, a call)
/// goes in with the current time, and what the node wants done comes out as
/// `Directive`s (send this, wake me then, this lookup finished). It never reads a clock,
/// opens a socket or draws a random number it was not seeded with, so a simulator can
/// run thousands of them deterministically and a transport can drive one for real.
///
/// | event                         | directives                                           |
/// |-------------------------------|------------------------------------------------------|
/// | `bootstrap(seeds:now:)`       | a lookup of our own ID, then of every bucket above the nearest |
/// | `findNode` / `findValue` / `put` | requests to the `alpha` closest known contacts    |
/// | `receive(_:now:)`             | an answer (server mode), the next requests of a lookup, a probe of a stale contact |
/// | `tick(now:)`                  | timeouts, bucket refresh, republishing, record expiry |
public struct KademliaNode: Sendable {
    public struct Configuration: Sendable {
        public var k = 20
        public var alpha = 3
        /// A request without an answer within this many nanoseconds has failed.
        public var requestTimeout: UInt64 = 1_000_000_000
        /// A bucket without a lookup for this long is refreshed.
        public var refreshInterval: UInt64 = 3_600_000_000_000
        /// Records this node published are stored again this often (before they expire).
        public var republishInterval: UInt64 = 1_800_000_000_000
        /// How often `tick` runs its periodic work (refresh, republish, expiry).
        public var maintenanceInterval: UInt64 = 60_000_000_000
        /// A `put` of a key whose holders a lookup found less than this long ago stores
        /// on those holders again without a new lookup; a holder that did not accept a
        /// store is dropped from them, and with fewer than half of `k` left the next
        /// put looks them up again. A sidecar republishes its record every 10 s, so most
        /// republishes cost the stores alone (measured in the simulator's publishing
        /// load, `tools/bench dht`). A node that joined closer to the key meanwhile gets
        /// the record at the next lookup, at most this much later; lookups find the
        /// record on the other holders until then.
        public var holderReuse: UInt64 = 300_000_000_000
        /// A full bucket does not probe its least recently heard contact for a
        /// newcomer while that contact was heard within this long (every other contact
        /// of the bucket then was too). Stores every 10 s from many publishers made
        /// such probes a quarter of the mesh's DHT traffic (the simulator's publishing
        /// load).
        public var probeQuiet: UInt64 = 60_000_000_000
        /// A contact whose request timed out is not asked by lookups for this long, or
        /// until it is heard from.
        public var quarantine: UInt64 = 30_000_000_000
        /// A client does lookups and publishes, answers nothing, and enters no table.
        public var isClient = false

        public init() {}
    }

    public enum Directive: Sendable, Equatable {
        case send(Envelope, to: Contact)
        /// Call `tick` at this time.
        case wake(at: UInt64)
        case finished(lookup: UInt64, LookupResult)
        /// A `put` stored its record on `replicas` nodes.
        case published(key: NodeID, replicas: Int)
    }

    private enum Purpose: Sendable {
        case caller
        case join
        case refresh
        case put(Record)
    }

    private enum Pending: Sendable {
        /// A lookup's request; `retried` once it was sent a second time.
        case lookup(UInt64, retried: Bool)
        case probe
        case store(NodeID)
    }

    private struct Request: Sendable {
        var to: Contact
        var purpose: Pending
        var deadline: UInt64
    }

    public let contact: Contact
    public let configuration: Configuration
    public private(set) var table: RoutingTable
    /// Records held for others (and our own), by key, then publisher.
    private var held: [NodeID: [NodeID: Record]] = [:]
    /// Records we published, by key (one per key: we are one publisher).
    private var owned: [NodeID: (record: Record, published: UInt64)] = [:]

    /// Publishers whose records one key may hold; more are refused (`key_full`).
    public static let maximumPublishersPerKey = WireCodec.maximumRecords

    /// The unexpired records held under `key`, in publisher order.
    public func records(under key: NodeID, now: UInt64 = 0) -> [Record] {
        (held[key] ?? [:]).values.filter { $0.expires > now }.sorted { $0.publisher < $1.publisher }
    }
    /// Unexpired records held, all keys together.
    public func heldRecordCount(now: UInt64) -> Int {
        held.values.reduce(0) { $0 + $1.values.count { $0.expires > now } }
    }

    private var lookups: [UInt64: (lookup: Lookup, purpose: Purpose)] = [:]
    private var requests: [UInt64: Request] = [:]
    /// Request IDs in the order their deadlines fall (every request gets the same
    /// timeout, so creation order is deadline order); answered ones are skipped.
    private var deadlines: [(deadline: UInt64, requestID: UInt64)] = []
    private var deadlinesStart = 0
    /// A second lookup of our own ID is due at the first maintenance after joining: by
    /// then the network knows more, and our true neighbours learn of us.
    private var settlePending = false
    private var puts: [NodeID: (acks: Int, outstanding: Int)] = [:]
    /// The holders the last lookup for each key we publish found, and when; dropped
    /// when one of them did not accept a store.
    private var holders: [NodeID: (contacts: [Contact], found: UInt64)] = [:]
    /// Put lookups under way, by key.
    private var putLookups: [NodeID: Int] = [:]
    private var nextRequestID: UInt64 = 1
    private var nextLookupID: UInt64 = 1
    private var nextMaintenance: UInt64?
    /// Contacts whose request timed out, and when: a lookup does not ask them again
    /// (nor retry them) until they are heard from or `quarantine` has passed, so that
    /// a node that vanished (cut off, powered down) costs one lookup its timeouts, not
    /// every lookup while the others still name it.
    private var unresponsive: [NodeID: UInt64] = [:]
    private var random: SplitMix
    private let validator: any RecordValidator

    /// Rejections of malformed or invalid input, by reason (for metrics).
    public private(set) var rejected: [String: Int] = [:]

    public init(
        contact: Contact,
        configuration: Configuration = Configuration(),
        seed: UInt64,
        validator: any RecordValidator
    ) {
        self.contact = contact
        self.configuration = configuration
        self.table = RoutingTable(own: contact.id, k: configuration.k)
        self.random = SplitMix(seed: seed)
        self.validator = validator
    }

    // MARK: calls

    /// Joins through `seeds`: learns them, then looks itself up (which fills the near
    /// buckets and announces it), then refreshes every bucket above its nearest.
    public mutating func bootstrap(seeds: [Contact], now: UInt64) -> [Directive] {
        for seed in seeds where seed.id != contact.id { _ = table.observe(seed) }
        settlePending = !configuration.isClient
        var directives = startLookup(target: contact.id, kind: .node, purpose: .join, now: now).1
        directives += scheduleMaintenance(now: now)
        return directives
    }

    public mutating func findNode(_ target: NodeID, now: UInt64) -> (lookup: UInt64, directives: [Directive]) {
        startLookup(target: target, kind: .node, purpose: .caller, now: now)
    }

    /// Looks a key up: the records of every publisher that the k closest nodes hold.
    public mutating func findValue(_ key: NodeID, now: UInt64) -> (lookup: UInt64, directives: [Directive]) {
        startLookup(target: key, kind: .value, purpose: .caller, now: now)
    }

    /// Publishes a record: stores it on the k nodes closest to its key (found by a
    /// lookup, or the ones found less than `holderReuse` ago) and republishes it every
    /// `republishInterval` while it is ours.
    public mutating func put(_ record: Record, now: UInt64) -> [Directive] {
        owned[record.key] = (record, now)
        if !configuration.isClient { held[record.key, default: [:]][record.publisher] = record }
        return store(record, now: now)
    }

    // MARK: events

    public mutating func receive(_ envelope: Envelope, now: UInt64) -> [Directive] {
        guard envelope.from.id != contact.id else {
            reject("own_id")
            return []
        }
        var directives: [Directive] = []
        unresponsive[envelope.from.id] = nil
        if !envelope.fromClient {
            directives += learn(envelope.from, now: now)
        }
        if envelope.message.isRequest {
            guard !configuration.isClient else { return directives }
            directives.append(.send(answer(envelope, now: now), to: envelope.from))
            return directives
        }
        guard let request = requests[envelope.requestID], request.to.id == envelope.from.id else {
            reject("unsolicited_response")
            return directives
        }
        requests.removeValue(forKey: envelope.requestID)
        switch request.purpose {
        case .probe:
            break
        case .store(let key):
            if case .stored(let accepted) = envelope.message {
                directives += storeAnswered(key: key, accepted: accepted, from: envelope.from.id)
            } else {
                reject("unexpected_response")
                directives += storeAnswered(key: key, accepted: false, from: envelope.from.id)
            }
        case .lookup(let id, _):
            guard var entry = lookups[id] else { break }
            switch envelope.message {
            case .nodes(let contacts):
                let others = contacts.filter { $0.id != contact.id }.prefix(configuration.k)
                let sane = others.filter { !isQuarantined($0.id, now: now) }
                entry.lookup.skipped += others.count - sane.count
                entry.lookup.answered(by: envelope.from.id, contacts: Array(sane))
            case .values(let records) where entry.lookup.kind == .value:
                let believed = records.filter { record in
                    let ok = record.key == entry.lookup.target && record.expires > now && validator.validate(record)
                    if !ok { reject("invalid_record") }
                    return ok
                }
                entry.lookup.foundValues(believed, from: envelope.from.id)
            default:
                reject("unexpected_response")
                entry.lookup.failed(envelope.from.id)
            }
            lookups[id] = entry
            directives += advance(id, now: now)
        }
        return directives
    }

    /// Timeouts, then periodic work when it is due.
    public mutating func tick(now: UInt64) -> [Directive] {
        var directives: [Directive] = []
        while deadlinesStart < deadlines.count, deadlines[deadlinesStart].deadline <= now {
            let requestID = deadlines[deadlinesStart].requestID
            deadlinesStart += 1
            guard let request = requests.removeValue(forKey: requestID) else { continue }  // answered
            table.failed(request.to.id)
            let known = isQuarantined(request.to.id, now: now)
            unresponsive[request.to.id] = now
            switch request.purpose {
            case .probe:
                break
            case .store(let key):
                directives += storeAnswered(key: key, accepted: false, from: request.to.id)
            case .lookup(let id, let retried):
                guard var entry = lookups[id] else { continue }
                if !retried, !known {
                    // One more try: a single lost datagram should not hide a node (one
                    // that timed out lately already is not tried again). The lookup
                    // meanwhile asks someone else in its place.
                    entry.lookup.stalled(request.to.id)
                    lookups[id] = entry
                    let message: Message =
                        entry.lookup.kind == .value ? .findValue(entry.lookup.target) : .findNode(entry.lookup.target)
                    directives += send(message, to: request.to, purpose: .lookup(id, retried: true), now: now)
                    directives += advance(id, now: now)
                    continue
                }
                entry.lookup.failed(request.to.id)
                lookups[id] = entry
                directives += advance(id, now: now)
            }
        }
        if deadlinesStart > 1024, deadlinesStart * 2 > deadlines.count {
            deadlines.removeFirst(deadlinesStart)
            deadlinesStart = 0
        }
        if let due = nextMaintenance, due <= now {
            nextMaintenance = nil
            directives += maintain(now: now)
            directives += scheduleMaintenance(now: now)
        }
        return directives
    }

    // MARK: inside

    private mutating func learn(_ peer: Contact, now: UInt64) -> [Directive] {
        guard case .probe(let oldest) = table.observe(peer, now: now, quiet: configuration.probeQuiet) else {
            return []
        }
        return send(.ping, to: oldest, purpose: .probe, now: now)
    }

    private mutating func answer(_ envelope: Envelope, now: UInt64) -> Envelope {
        let message: Message
        switch envelope.message {
        case .ping:
            message = .pong
        case .findNode(let target):
            message = .nodes(table.closest(to: target, count: configuration.k, excluding: envelope.from.id))
        case .findValue(let key):
            let records = self.records(under: key, now: now)
            if !records.isEmpty {
                message = .values(records)
            } else {
                message = .nodes(table.closest(to: key, count: configuration.k, excluding: envelope.from.id))
            }
        case .store(let record):
            message = .stored(accept(record, now: now))
        case .pong, .nodes, .values, .stored:
            preconditionFailure("answer(_:) called with a response: \(envelope.message)")
        }
        return Envelope(
            from: contact,
            requestID: envelope.requestID,
            message: message,
            fromClient: configuration.isClient
        )
    }

    /// Stores a record offered by a peer: valid, not expired, and not older than the one held.
    private mutating func accept(_ record: Record, now: UInt64) -> Bool {
        guard record.expires > now else {
            reject("expired_record")
            return false
        }
        guard validator.validate(record) else {
            reject("invalid_record")
            return false
        }
        var publishers = held[record.key] ?? [:]
        publishers = publishers.filter { $0.value.expires > now }
        if let current = publishers[record.publisher], current.sequence > record.sequence {
            reject("rolled_back_record")
            return false
        }
        guard publishers[record.publisher] != nil || publishers.count < Self.maximumPublishersPerKey else {
            reject("key_full")
            return false
        }
        publishers[record.publisher] = record
        held[record.key] = publishers
        return true
    }

    private mutating func startLookup(
        target: NodeID,
        kind: Lookup.Kind,
        purpose: Purpose,
        now: UInt64
    ) -> (lookup: UInt64, directives: [Directive]) {
        let id = nextLookupID
        nextLookupID += 1
        table.touched(bucketOf: target, now: now)
        let closest = table.closest(to: target, count: configuration.k)
        let answering = closest.filter { !isQuarantined($0.id, now: now) }
        // When every contact timed out lately (this node's own link was down), all are
        // asked: one of them may answer now.
        let seeds = answering.isEmpty ? closest : answering
        var lookup = Lookup(
            id: id,
            target: target,
            kind: kind,
            k: configuration.k,
            alpha: configuration.alpha,
            seeds: seeds,
            own: contact.id
        )
        lookup.skipped = closest.count - seeds.count
        lookups[id] = (lookup, purpose)
        return (id, advance(id, now: now))
    }

    /// Whether a request to `id` timed out within the quarantine.
    private func isQuarantined(_ id: NodeID, now: UInt64) -> Bool {
        guard let since = unresponsive[id] else { return false }
        return now < since + configuration.quarantine
    }

    /// Sends a lookup's next requests, or finishes it.
    private mutating func advance(_ id: UInt64, now: UInt64) -> [Directive] {
        guard var entry = lookups[id] else { return [] }
        var directives: [Directive] = []
        let message: (NodeID) -> Message = entry.lookup.kind == .value ? { .findValue($0) } : { .findNode($0) }
        for peer in entry.lookup.next() {
            directives += send(message(entry.lookup.target), to: peer, purpose: .lookup(id, retried: false), now: now)
        }
        lookups[id] = entry
        guard entry.lookup.isFinished else { return directives }
        lookups.removeValue(forKey: id)
        let result = LookupResult(
            target: entry.lookup.target,
            closest: entry.lookup.closest,
            records: entry.lookup.kind == .value
                ? withHeld(entry.lookup.records, under: entry.lookup.target, now: now) : entry.lookup.records,
            hops: entry.lookup.hops,
            messages: entry.lookup.messages,
            skipped: entry.lookup.skipped
        )
        switch entry.purpose {
        case .caller:
            directives.append(.finished(lookup: id, result))
        case .join:
            // Fill the far buckets too, so that others' lookups can route through us.
            for bucket in table.bucketsDue(now: now, interval: 0) {
                let target = contact.id.random(inBucket: bucket, using: &random)
                directives += startLookup(target: target, kind: .node, purpose: .refresh, now: now).1
            }
        case .refresh:
            break
        case .put(let record):
            putLookups[record.key, default: 1] -= 1
            if putLookups[record.key] == 0 { putLookups[record.key] = nil }
            let found = Array(result.closest.prefix(configuration.k))
            // Only a full set is worth reusing: with fewer, the mesh is small or still
            // filling, and nodes that join next may be the key's true holders.
            holders[record.key] = found.count >= configuration.k ? (found, now) : nil
            directives += send(record, to: found, now: now)
        }
        return directives
    }

    /// A record to the holders of its key: the remembered ones while fresh, otherwise
    /// those a new lookup finds.
    private mutating func store(_ record: Record, now: UInt64) -> [Directive] {
        // Not while another put of the key is under way: their counts would mix. (A
        // clock that stepped back makes the list stale rather than trapping.)
        if let known = holders[record.key], now >= known.found, now - known.found < configuration.holderReuse,
            puts[record.key] == nil, putLookups[record.key] == nil
        {
            return send(record, to: known.contacts, now: now)
        }
        putLookups[record.key, default: 0] += 1
        return startLookup(target: record.key, kind: .node, purpose: .put(record), now: now).1
    }

    private mutating func send(_ record: Record, to holders: [Contact], now: UInt64) -> [Directive] {
        puts[record.key] = (0, holders.count)
        var directives: [Directive] = []
        if holders.isEmpty { directives += storeAnswered(key: record.key, accepted: false, counted: false) }
        for holder in holders {
            directives += send(.store(record), to: holder, purpose: .store(record.key), now: now)
        }
        return directives
    }

    /// A value lookup's records merged with those this node holds itself under the key
    /// (it may be one of the closest nodes, or the only one): per publisher the newest.
    private func withHeld(_ found: [Record], under key: NodeID, now: UInt64) -> [Record] {
        let own = records(under: key, now: now)
        guard !own.isEmpty else { return found }
        var newest: [NodeID: Record] = [:]
        for record in found + own where record.sequence >= newest[record.publisher]?.sequence ?? 0 {
            newest[record.publisher] = record
        }
        return newest.values.sorted { $0.publisher < $1.publisher }
    }

    private mutating func storeAnswered(
        key: NodeID,
        accepted: Bool,
        from holder: NodeID? = nil,
        counted: Bool = true
    ) -> [Directive] {
        // A holder that is gone or refuses is not asked again; with fewer than half of
        // k left, the next put looks the holders up again.
        if !accepted, var known = holders[key] {
            known.contacts.removeAll { $0.id == holder }
            holders[key] = holder == nil || known.contacts.count < max(1, configuration.k / 2) ? nil : known
        }
        guard var put = puts[key] else { return [] }
        if counted {
            put.outstanding -= 1
            if accepted { put.acks += 1 }
        }
        guard put.outstanding <= 0 else {
            puts[key] = put
            return []
        }
        puts.removeValue(forKey: key)
        return [.published(key: key, replicas: put.acks)]
    }

    private mutating func send(_ message: Message, to peer: Contact, purpose: Pending, now: UInt64) -> [Directive] {
        let requestID = nextRequestID
        nextRequestID += 1
        let deadline = now + configuration.requestTimeout
        requests[requestID] = Request(to: peer, purpose: purpose, deadline: deadline)
        deadlines.append((deadline, requestID))
        let envelope = Envelope(
            from: contact,
            requestID: requestID,
            message: message,
            fromClient: configuration.isClient
        )
        return [.send(envelope, to: peer), .wake(at: deadline)]
    }

    private mutating func maintain(now: UInt64) -> [Directive] {
        var directives: [Directive] = []
        unresponsive = unresponsive.filter { now < $0.value + configuration.quarantine }
        if settlePending {
            settlePending = false
            directives += startLookup(target: contact.id, kind: .node, purpose: .refresh, now: now).1
        }
        held = held.compactMapValues { publishers in
            let live = publishers.filter { $0.value.expires > now }
            return live.isEmpty ? nil : live
        }
        for (key, entry) in owned
        where now < entry.published || now - entry.published >= configuration.republishInterval {
            owned[key] = (entry.record, now)
            directives += store(entry.record, now: now)
        }
        if !configuration.isClient {
            for bucket in table.bucketsDue(now: now, interval: configuration.refreshInterval) {
                let target = contact.id.random(inBucket: bucket, using: &random)
                directives += startLookup(target: target, kind: .node, purpose: .refresh, now: now).1
            }
        }
        return directives
    }

    private mutating func scheduleMaintenance(now: UInt64) -> [Directive] {
        guard nextMaintenance == nil else { return [] }
        let due = now + configuration.maintenanceInterval
        nextMaintenance = due
        return [.wake(at: due)]
    }

    private mutating func reject(_ reason: String) {
        rejected[reason, default: 0] += 1
    }

    /// Lookups and requests under way (for tests and the simulator).
    public var pendingRequests: Int { requests.count }
    public var activeLookups: Int { lookups.count }
}

/// The node's own generator, seeded by its caller: SplitMix64. Public for the
/// simulators and benchmarks that need the same sequence from a seed.
public struct SplitMix: RandomNumberGenerator, Sendable {
    var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
