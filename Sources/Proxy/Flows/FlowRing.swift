import MeshAPI

/// The finished flows a sidecar keeps: the newest `capacity`, oldest first. A flow
/// pushed out by a newer one is counted in `evicted`, so a reader can tell that the
/// table is not all there was.
struct FlowRing: Sendable {
    let capacity: Int
    private var storage: [FlowRecord] = []
    /// Index of the oldest record once the ring is full.
    private var head = 0
    private(set) var evicted: UInt64 = 0

    init(capacity: Int) {
        precondition(capacity >= 0, "a ring buffer of \(capacity) flows")
        self.capacity = capacity
        storage.reserveCapacity(min(capacity, 1024))
    }

    var count: Int { storage.count }

    mutating func append(_ record: FlowRecord) {
        guard capacity > 0 else {
            evicted += 1
            return
        }
        if storage.count < capacity {
            storage.append(record)
            return
        }
        storage[head] = record
        head = (head + 1) % capacity
        evicted += 1
    }

    /// Oldest first.
    var records: [FlowRecord] {
        Array(storage[head...] + storage[..<head])
    }
}
