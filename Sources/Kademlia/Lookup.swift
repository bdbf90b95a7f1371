/// One iterative lookup: ask the `alpha` closest unasked contacts at a time, learn
/// closer ones from their answers, and stop when the `k` closest that answered have
/// all been asked (or, for a value, when a holder returns it).
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
    private(set) var found: (record: Record, hops: Int)?
    /// Holders asked that did not have the value: the record is stored on the closest
    /// of them afterwards (caching along the path, as in the paper).
    private(set) var withoutValue: [Contact] = []

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
        guard found == nil else { return [] }
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
        if kind == .value { withoutValue.append(entries[index].contact) }
        add(contacts, hops: entries[index].hops + 1)
    }

    mutating func foundValue(_ record: Record, from id: NodeID) {
        guard let index = settle(id) else { return }
        entries[index].state = .answered
        if found == nil || record.sequence > found!.record.sequence {
            found = (record, entries[index].hops)
        }
    }

    mutating func failed(_ id: NodeID) {
        guard let index = settle(id) else { return }
        entries[index].state = .failed
    }

    /// Done: a value was found, or the k closest live contacts have all answered.
    var isFinished: Bool {
        if found != nil { return true }
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

    /// Round trips to the closest answering contact (or to the holder of the value).
    var hops: Int {
        if let found { return found.hops }
        return entries.first { $0.state == .answered }?.hops ?? 0
    }
}

/// How a lookup ended, as the caller sees it.
public struct LookupResult: Sendable, Equatable {
    public var target: NodeID
    /// The k closest live nodes found, closest first.
    public var closest: [Contact]
    /// For value lookups: the newest valid record found.
    public var record: Record?
    public var hops: Int
    /// Requests sent.
    public var messages: Int
}
