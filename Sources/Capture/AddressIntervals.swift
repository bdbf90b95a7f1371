import MeshNet

/// Networks of one family merged into sorted, disjoint `[start, end)` ranges: the
/// elements of an nftables interval set (the kernel refuses overlapping intervals).
struct AddressIntervals: Equatable {
    struct Interval: Equatable {
        var start: UInt128
        /// Nil: up to the last address of the family.
        var end: UInt128?
    }

    let family: IPNetwork.Family
    private(set) var intervals: [Interval] = []

    init(_ networks: [IPNetwork], family: IPNetwork.Family) {
        self.family = family
        let sorted = networks.filter { $0.family == family }.sorted { $0.base < $1.base }
        for network in sorted {
            let next = Interval(start: network.base, end: network.end)
            guard let last = intervals.last else {
                intervals.append(next)
                continue
            }
            guard let lastEnd = last.end else { continue }  // already runs to the end
            if next.start <= lastEnd {
                if let nextEnd = next.end {
                    intervals[intervals.count - 1].end = max(lastEnd, nextEnd)
                } else {
                    intervals[intervals.count - 1].end = nil
                }
            } else {
                intervals.append(next)
            }
        }
    }
}
