/// The log as one member holds it: the entries after its latest snapshot, and the
/// index and term the snapshot ends at.
struct RaftLog: Sendable {
    private(set) var snapshotIndex: UInt64 = 0
    private(set) var snapshotTerm: UInt64 = 0
    /// `entries[i].index == snapshotIndex + 1 + i`.
    private(set) var entries: [LogEntry] = []

    init(snapshotIndex: UInt64 = 0, snapshotTerm: UInt64 = 0, entries: [LogEntry] = []) {
        self.snapshotIndex = snapshotIndex
        self.snapshotTerm = snapshotTerm
        self.entries = entries
    }

    var lastIndex: UInt64 { snapshotIndex + UInt64(entries.count) }
    var lastTerm: UInt64 { entries.last?.term ?? snapshotTerm }

    /// The term of the entry at `index`; nil when it is compacted away or not there yet.
    func term(at index: UInt64) -> UInt64? {
        if index == snapshotIndex { return snapshotTerm }
        guard index > snapshotIndex, index <= lastIndex else { return nil }
        return entries[Int(index - snapshotIndex - 1)].term
    }

    func entry(at index: UInt64) -> LogEntry? {
        guard index > snapshotIndex, index <= lastIndex else { return nil }
        return entries[Int(index - snapshotIndex - 1)]
    }

    /// At most `limit` entries from `index` on; empty when `index` is past the end or
    /// compacted.
    func entries(from index: UInt64, limit: Int) -> [LogEntry] {
        guard index > snapshotIndex, index <= lastIndex else { return [] }
        let start = Int(index - snapshotIndex - 1)
        return Array(entries[start..<min(entries.count, start + limit)])
    }

    /// The first index holding `term` (for a follower's conflict hint).
    func firstIndex(ofTerm term: UInt64, atOrBefore index: UInt64) -> UInt64 {
        var first = index
        while first > snapshotIndex + 1, self.term(at: first - 1) == term { first -= 1 }
        return first
    }

    /// The last index holding `term` at or before `index`, if any (for the leader's
    /// back-off).
    func lastIndex(ofTerm term: UInt64, atOrBefore index: UInt64) -> UInt64? {
        var candidate = min(index, lastIndex)
        while candidate > snapshotIndex {
            guard let found = self.term(at: candidate) else { return nil }
            if found == term { return candidate }
            if found < term { return nil }
            candidate -= 1
        }
        return nil
    }

    mutating func append(_ new: [LogEntry]) {
        precondition(new.first.map { $0.index == lastIndex + 1 } ?? true, "log entries appended out of order")
        entries += new
    }

    /// Drops every entry after `index`.
    mutating func truncate(after index: UInt64) {
        precondition(index >= snapshotIndex, "truncating into the snapshot")
        entries.removeLast(Int(lastIndex - index))
    }

    /// The entries up to `index` are in a snapshot now.
    mutating func compact(through index: UInt64, term: UInt64) {
        if index >= lastIndex {
            entries = []
        } else {
            entries.removeFirst(Int(index - snapshotIndex))
        }
        snapshotIndex = index
        snapshotTerm = term
    }

    /// The latest membership entry at or before `index`.
    func membership(atOrBefore index: UInt64) -> Membership? {
        var position = Int(min(index, lastIndex)) - Int(snapshotIndex) - 1
        while position >= 0 {
            if case .membership(let membership) = entries[position].kind { return membership }
            position -= 1
        }
        return nil
    }
}
