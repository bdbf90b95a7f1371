/// One iterative lookup: ask the `alpha` closest unasked contacts at a time, learn
/// closer ones from their answers, and stop when the `k` closest that answered have
/// all been asked. A value lookup goes on past the first holder too: each holder may
/// keep records of publishers the others lack, and they are merged (the newest of each
/// publisher).
struct Lookup: Sendable {
    enum Kind: Sendable, Equatable {
        case node
        case value
    }

    enum State: Sendable, Equatable {
        case fresh
        /// Asked, and counted against `alpha`.
        case asked
        /// Asked, timed out once and asked again: no longer holds a slot of `alpha`, so a
        /// dead contact does not stall the lookup while its retry runs out.
        case stalled
        case answered
        case failed
    }

    struct Entry: Sendable {
        var contact: Contact
        var state: State
        /// Sequential round trips from us to this contact's discovery, plus one.
        var hops: Int
    }

    let id: UInt64
    let target: NodeID
    let kind: Kind
    let k: Int
    let alpha: Int
    /// Closest first.
    private(set) var entries: [Entry] = []
    private var known: Set<NodeID> = []
    private(set) var inFlight = 0
    private(set) var messages = 0
    /// Contacts left out for the quarantine (`LookupResult.skipped`).
    var skipped = 0
    /// The newest record of each publisher found so far.
    private(set) var found: [NodeID: Record] = [:]
    /// Round trips to the first holder that answered with records.
    private var valueHops: Int?

    init(id: UInt64, target: NodeID, kind: Kind, k: Int, alpha: Int, seeds: [Contact], own: NodeID) {
        self.id = id
        self.target = target
        self.kind = kind
        self.k = k
        self.alpha = alpha
        known.insert(own)
        add(seeds, hops: 1)
    }

    private mutating func add(_ contacts: [Contact], hops: Int) {
        for contact in contacts where known.insert(contact.id).inserted {
            let entry = Entry(contact: contact, state: .fresh, hops: hops)
            let position = entries.firstIndex { target.isCloser(contact.id, than: $0.contact.id) } ?? entries.count
            entries.insert(entry, at: position)
        }
        // Far entries beyond what can matter are dropped (bounded memory per lookup). A
        // dropped entry still asked frees its slot; its answer will find no entry.
        let limit = 4 * k
        if entries.count > limit {
            for entry in entries[limit...] where entry.state == .asked { inFlight -= 1 }
            entries.removeLast(entries.count - limit)
        }
    }

    /// The contacts to ask now (each is marked asked).
    mutating func next() -> [Contact] {
        var picked: [Contact] = []
        var considered = 0
        for index in entries.indices {
            guard inFlight < alpha else { break }
            if entries[index].state == .failed { continue }
            considered += 1
            if considered > k { break }
            if entries[index].state == .fresh {
                entries[index].state = .asked
                inFlight += 1
                messages += 1
                picked.append(entries[index].contact)
            }
        }
        return picked
    }

    /// The index of `id`'s entry if a request to it is out; frees its slot.
    private mutating func settle(_ id: NodeID) -> Int? {
        guard let index = entries.firstIndex(where: { $0.contact.id == id }) else { return nil }
        switch entries[index].state {
        case .asked: inFlight -= 1
        case .stalled: break
        default: return nil
        }
        return index
    }

    /// The first request to `id` timed out and is being retried.
    mutating func stalled(_ id: NodeID) {
        guard let index = entries.firstIndex(where: { $0.contact.id == id }), entries[index].state == .asked else {
            return
        }
        entries[index].state = .stalled
        inFlight -= 1
    }

    mutating func answered(by id: NodeID, contacts: [Contact]) {
        guard let index = settle(id) else { return }
        entries[index].state = .answered
        add(contacts, hops: entries[index].hops + 1)
    }

    /// A holder answered with (already validated) records.
    mutating func foundValues(_ records: [Record], from id: NodeID) {
        guard let index = settle(id) else { return }
        entries[index].state = .answered
        if valueHops == nil, !records.isEmpty { valueHops = entries[index].hops }
        for record in records where record.sequence >= found[record.publisher]?.sequence ?? 0 {
            found[record.publisher] = record
        }
    }

    mutating func failed(_ id: NodeID) {
        guard let index = settle(id) else { return }
        entries[index].state = .failed
    }

    /// Done: the k closest live contacts have all answered.
    var isFinished: Bool {
        guard inFlight == 0 else { return false }
        var considered = 0
        for entry in entries where entry.state != .failed {
            if entry.state == .fresh || entry.state == .stalled { return false }
            considered += 1
            if considered == k { break }
        }
        return true
    }

    /// The k closest contacts that answered, closest first.
    var closest: [Contact] {
        Array(entries.lazy.filter { $0.state == .answered }.prefix(k).map(\.contact))
    }

    /// Round trips to the closest answering contact (or to the first holder of a value).
    var hops: Int {
        if let valueHops { return valueHops }
        return entries.first { $0.state == .answered }?.hops ?? 0
    }

    /// The records found, one per publisher, in publisher order.
    var records: [Record] { found.values.sorted { $0.publisher < $1.publisher } }
}

/// How a lookup ended, as the caller sees it.
public struct LookupResult: Sendable, Equatable {
    public var target: NodeID
    /// The k closest live nodes found, closest first.
    public var closest: [Contact]
    /// For value lookups: the newest valid record of each publisher found, in publisher
    /// order (empty: none).
    public var records: [Record]
    public var hops: Int
    /// Requests sent.
    public var messages: Int
    /// Times a contact was left out because its requests timed out lately (the
    /// quarantine): a value lookup that found nothing while it left some out is no
    /// proof of absence.
    public var skipped = 0
}
