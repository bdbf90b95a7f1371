/// One operation of a key-value history, as a client saw it.
public struct KVOperation: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case get
        case put(String)
        /// Compare-and-swap: `new` if the value is `expected` (nil: absent).
        case cas(expected: String?, new: String)
    }

    public enum Outcome: Equatable, Sendable {
        /// The value read (get), or whether the swap happened (cas); put: `.done`.
        case value(String?)
        case swapped(Bool)
        case done
        /// No answer: it may or may not have taken effect (never after its call).
        case unknown
        /// Known not to have happened (refused before it reached the log, or its
        /// entry was replaced): left out of the history.
        case failed
    }

    public var client: Int
    public var key: String
    public var kind: Kind
    public var outcome: Outcome
    /// Virtual nanoseconds; `returned` is ignored for an unknown outcome.
    public var called: UInt64
    public var returned: UInt64

    public init(client: Int, key: String, kind: Kind, outcome: Outcome, called: UInt64, returned: UInt64) {
        self.client = client
        self.key = key
        self.kind = kind
        self.outcome = outcome
        self.called = called
        self.returned = returned
    }
}

/// Decides whether a key-value history is linearizable, in the manner of Porcupine:
/// the history is split by key (each operation touches one), and each part is
/// searched with Wing and Gong's algorithm (try to linearize each pending call in
/// turn, backtrack at a return that cannot be reached) with Lowe's memo of
/// (operations linearized, state) already explored. An operation with an unknown
/// outcome may take effect at any time after its call, or never; a failed one (known
/// not to have happened) and a read with an unknown outcome (it observed nothing) are
/// left out.
public enum LinearizabilityChecker {
    public struct Verdict: Sendable, Equatable {
        public var linearizable: Bool
        /// The first key whose history is not, if any.
        public var key: String?
        /// Search steps taken (for the benchmark's report).
        public var steps: Int
    }

    public static func check(_ history: [KVOperation]) -> Verdict {
        var byKey: [String: [KVOperation]] = [:]
        for operation in history {
            if operation.outcome == .failed || (operation.kind == .get && operation.outcome == .unknown) { continue }
            byKey[operation.key, default: []].append(operation)
        }
        var steps = 0
        for key in byKey.keys.sorted() {
            let (ok, taken) = checkKey(byKey[key]!)
            steps += taken
            if !ok { return Verdict(linearizable: false, key: key, steps: steps) }
        }
        return Verdict(linearizable: true, key: nil, steps: steps)
    }

    /// One step of the register: whether `operation` can happen in `state` with the
    /// outcome it had, and the state after it.
    static func step(_ state: String?, _ operation: KVOperation) -> (Bool, String?) {
        switch (operation.kind, operation.outcome) {
        case (.get, .value(let value)):
            return (value == state, state)
        case (.get, _):
            return (true, state)
        case (.put(let value), _):
            return (true, value)
        case (.cas(let expected, let new), .swapped(let swapped)):
            return swapped ? (state == expected, new) : (state != expected, state)
        case (.cas(let expected, let new), _):
            return (true, state == expected ? new : state)
        }
    }

    private struct Entry {
        var operation: Int
        var isCall: Bool
        var time: UInt64
        var previous: Int
        var next: Int
        /// The call's return entry.
        var match: Int
    }

    private struct Memo: Hashable {
        var linearized: [UInt64]
        var state: String?
    }

    private static func checkKey(_ operations: [KVOperation]) -> (Bool, Int) {
        // Calls and returns in time order, calls first at one instant; an unknown
        // outcome returns after everything.
        var events: [(time: UInt64, isCall: Bool, operation: Int)] = []
        for (index, operation) in operations.enumerated() {
            events.append((operation.called, true, index))
            events.append((operation.outcome == .unknown ? .max : operation.returned, false, index))
        }
        events.sort { ($0.time, $0.isCall ? 0 : 1, $0.operation) < ($1.time, $1.isCall ? 0 : 1, $1.operation) }
        // A doubly linked list over the events, with a sentinel head at index 0.
        var entries = [Entry(operation: -1, isCall: false, time: 0, previous: -1, next: 1, match: -1)]
        var returnOf = [Int](repeating: -1, count: operations.count)
        for (position, event) in events.enumerated() {
            entries.append(
                Entry(
                    operation: event.operation,
                    isCall: event.isCall,
                    time: event.time,
                    previous: position,
                    next: position + 2 <= events.count ? position + 2 : -1,
                    match: -1
                )
            )
            if !event.isCall { returnOf[event.operation] = position + 1 }
        }
        for index in 1..<entries.count where entries[index].isCall {
            entries[index].match = returnOf[entries[index].operation]
        }
        if events.isEmpty { entries[0].next = -1 }

        func lift(_ call: Int) {
            let ret = entries[call].match
            entries[entries[call].previous].next = entries[call].next
            if entries[call].next >= 0 { entries[entries[call].next].previous = entries[call].previous }
            entries[entries[ret].previous].next = entries[ret].next
            if entries[ret].next >= 0 { entries[entries[ret].next].previous = entries[ret].previous }
        }
        func unlift(_ call: Int) {
            let ret = entries[call].match
            entries[entries[ret].previous].next = ret
            if entries[ret].next >= 0 { entries[entries[ret].next].previous = ret }
            entries[entries[call].previous].next = call
            if entries[call].next >= 0 { entries[entries[call].next].previous = call }
        }

        var linearized = [UInt64](repeating: 0, count: (operations.count + 63) / 64)
        var state: String? = nil
        var memo: Set<Memo> = []
        var stack: [(call: Int, state: String?)] = []
        var steps = 0
        var current = entries[0].next
        while entries[0].next >= 0 {
            steps += 1
            guard current >= 0 else { return (false, steps) }
            let entry = entries[current]
            if entry.isCall {
                let (ok, next) = step(state, operations[entry.operation])
                if ok {
                    var candidate = linearized
                    candidate[entry.operation / 64] |= 1 << UInt64(entry.operation % 64)
                    if memo.insert(Memo(linearized: candidate, state: next)).inserted {
                        stack.append((current, state))
                        state = next
                        linearized = candidate
                        lift(current)
                        current = entries[0].next
                        continue
                    }
                }
                current = entry.next
            } else {
                // A return whose call could not be linearized before it: back up.
                guard let (call, previousState) = stack.popLast() else { return (false, steps) }
                state = previousState
                let operation = entries[call].operation
                linearized[operation / 64] &= ~(1 << UInt64(operation % 64))
                unlift(call)
                current = entries[call].next
            }
        }
        return (true, steps)
    }
}
