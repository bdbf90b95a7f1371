/// Runs of rule indices by a 64-bit key, in one open-addressing table built once.
///
/// A lookup hashes the key with one multiplication and usually reads one slot; every
/// run lives in one shared array. With 10,000 rules a dictionary of arrays costs a few
/// cache misses per lookup (its bitmap, its keys, its values, then the array) and one
/// allocation per key when the set is compiled.
struct RuleRuns: Sendable {
    private struct Slot: Sendable {
        var key: UInt64
        var start: Int32
        var count: Int32
    }

    /// No key is all ones (keys are a scope number and a port; see `PolicySet.runKey`).
    private static let vacant = UInt64.max

    private let slots: [Slot]
    private let shift: UInt64
    /// Every run, one after the other.
    private let rules: [Int32]

    /// `entries` in any order: each run comes out ascending, and a rule listed twice
    /// under one key appears once.
    init(_ entries: [(key: UInt64, rule: Int32)]) {
        let sorted = entries.sorted { $0.key != $1.key ? $0.key < $1.key : $0.rule < $1.rule }
        var rules: [Int32] = []
        rules.reserveCapacity(sorted.count)
        var runs: [Slot] = []
        for entry in sorted {
            if let last = runs.last, last.key == entry.key {
                if rules.last == entry.rule { continue }
                runs[runs.count - 1].count += 1
            } else {
                runs.append(Slot(key: entry.key, start: Int32(rules.count), count: 1))
            }
            rules.append(entry.rule)
        }
        // At most half full, so that probes stay short.
        var bits: UInt64 = 3
        while (1 << bits) < runs.count * 2 { bits += 1 }
        shift = 64 - bits
        var slots = [Slot](repeating: Slot(key: Self.vacant, start: 0, count: 0), count: 1 << bits)
        let mask = slots.count - 1
        for run in runs {
            var position = Self.position(run.key, shift: shift)
            while slots[position].key != Self.vacant { position = (position + 1) & mask }
            slots[position] = run
        }
        self.slots = slots
        self.rules = rules
    }

    private static func position(_ key: UInt64, shift: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    /// Where the run of `key` lies in `self[_]`; empty when there is none.
    func range(of key: UInt64) -> Range<Int> {
        let mask = slots.count - 1
        var position = Self.position(key, shift: shift)
        while true {
            let slot = slots[position]
            if slot.key == key { return Int(slot.start)..<Int(slot.start + slot.count) }
            if slot.key == Self.vacant { return 0..<0 }
            position = (position + 1) & mask
        }
    }

    subscript(position: Int) -> Int32 { rules[position] }
}
