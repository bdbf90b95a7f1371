/// The k-buckets of one node: for every distance range, up to `k` contacts, least
/// recently seen first, and a replacement cache of contacts that did not fit.
///
/// A contact is never dropped for a newcomer while it may be alive: when a full
/// bucket sees a new contact, the least recently seen one is probed (`observe`
/// answers `.probe`); if it answers it moves to the back and the newcomer waits in the
/// cache; if it does not (`failed`) it is evicted and the newest cached contact takes
/// its place. Long-lived nodes stay, which is what keeps Kademlia tables stable.
public struct RoutingTable: Sendable {
    public enum Observation: Equatable, Sendable {
        case inserted
        case refreshed
        /// The bucket is full: ping this least recently seen contact.
        case probe(Contact)
        /// Cached as a replacement (a probe is already under way).
        case cached
        case ignored
    }

    struct Bucket: Sendable {
        var contacts: [Contact] = []
        /// Consecutive unanswered requests, by contact (cleared by any message from it).
        var failures: [NodeID: Int] = [:]
        var replacements: [Contact] = []
        var probing: NodeID?
        /// When each contact was last heard from (the `now` of `observe`).
        var heard: [NodeID: UInt64] = [:]
        /// Virtual time of the last lookup into this bucket's range (for refresh).
        var lastLookup: UInt64 = 0
    }

    public let own: NodeID
    public let k: Int
    private(set) var buckets: [Bucket]

    public init(own: NodeID, k: Int = 20) {
        self.own = own
        self.k = k
        self.buckets = Array(repeating: Bucket(), count: 256)
    }

    public var count: Int { buckets.reduce(0) { $0 + $1.contacts.count } }

    public func contains(_ id: NodeID) -> Bool {
        guard let index = own.bucket(of: id) else { return false }
        return buckets[index].contacts.contains { $0.id == id }
    }

    /// A message from (or an answer naming) `contact` was seen at `now`. A full
    /// bucket probes its least recently heard contact for the newcomer, unless that one
    /// was heard within `quiet` (a probe would most likely only confirm it): the
    /// newcomer waits in the cache. A dead contact is never heard again, so it reaches
    /// the front and is probed by the first newcomer after `quiet`.
    public mutating func observe(_ contact: Contact, now: UInt64 = 0, quiet: UInt64 = 0) -> Observation {
        guard let index = own.bucket(of: contact.id) else { return .ignored }
        buckets[index].heard[contact.id] = now
        if let position = buckets[index].contacts.firstIndex(of: contact) {
            buckets[index].failures.removeValue(forKey: contact.id)
            let seen = buckets[index].contacts.remove(at: position)
            buckets[index].contacts.append(seen)
            if buckets[index].probing == contact.id { buckets[index].probing = nil }
            return .refreshed
        }
        if buckets[index].contacts.count < k {
            buckets[index].contacts.append(contact)
            buckets[index].replacements.removeAll { $0 == contact }
            return .inserted
        }
        buckets[index].replacements.removeAll { $0 == contact }
        buckets[index].replacements.append(contact)
        if buckets[index].replacements.count > k {
            let dropped = buckets[index].replacements.removeFirst()
            buckets[index].heard[dropped.id] = nil
        }
        guard buckets[index].probing == nil, let oldest = buckets[index].contacts.first else { return .cached }
        if quiet > 0, let heard = buckets[index].heard[oldest.id], now < heard + quiet { return .cached }
        buckets[index].probing = oldest.id
        return .probe(oldest)
    }

    /// Unanswered requests in a row after which a contact is dropped: a lost datagram or
    /// a slow moment does not cost a live node its place.
    public static let maximumFailures = 3

    /// `id` did not answer. After `maximumFailures` in a row, or when it was probed for
    /// a newcomer waiting in the cache, it leaves the table and the newest replacement
    /// takes its place.
    public mutating func failed(_ id: NodeID) {
        guard let index = own.bucket(of: id) else { return }
        buckets[index].replacements.removeAll { $0.id == id }
        guard let position = buckets[index].contacts.firstIndex(where: { $0.id == id }) else {
            buckets[index].heard[id] = nil
            return
        }
        let failures = buckets[index].failures[id, default: 0] + 1
        let probed = buckets[index].probing == id
        if probed { buckets[index].probing = nil }
        guard probed || failures >= Self.maximumFailures else {
            buckets[index].failures[id] = failures
            return
        }
        buckets[index].failures.removeValue(forKey: id)
        buckets[index].heard[id] = nil
        buckets[index].contacts.remove(at: position)
        if let replacement = buckets[index].replacements.popLast() {
            buckets[index].contacts.append(replacement)
        }
    }

    /// The `count` known contacts closest to `target`, closest first: one XOR per
    /// contact and a bounded insertion, since every FIND_NODE a server answers runs it.
    public func closest(to target: NodeID, count: Int, excluding excluded: NodeID? = nil) -> [Contact] {
        guard count > 0 else { return [] }
        var best: [(distance: NodeID, contact: Contact)] = []
        best.reserveCapacity(count + 1)
        for bucket in buckets {
            for contact in bucket.contacts where contact.id != excluded {
                let distance = target ^ contact.id
                if best.count == count, !(distance < best[best.count - 1].distance) { continue }
                var position = best.count
                while position > 0, distance < best[position - 1].distance { position -= 1 }
                best.insert((distance, contact), at: position)
                if best.count > count { best.removeLast() }
            }
        }
        return best.map(\.contact)
    }

    /// Every contact, for inspection.
    public var contacts: [Contact] { buckets.flatMap(\.contacts) }

    mutating func touched(bucketOf target: NodeID, now: UInt64) {
        guard let index = own.bucket(of: target) else { return }
        buckets[index].lastLookup = now
    }

    /// Buckets that hold contacts (or lie above the nearest one) and saw no lookup for
    /// `interval`: each gets a lookup of a random ID in its range.
    func bucketsDue(now: UInt64, interval: UInt64) -> [Int] {
        guard let nearest = buckets.firstIndex(where: { !$0.contacts.isEmpty }) else { return [] }
        return (nearest..<256).filter { now &- buckets[$0].lastLookup >= interval }
    }
}
