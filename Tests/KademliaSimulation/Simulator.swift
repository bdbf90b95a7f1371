import Foundation
import Kademlia

/// Stands in for signatures in the simulator: a record carries a tag only the trust
/// domain's key could make (a keyed hash of everything in it), so a node without the
/// key can forge nothing, and every node can check.
public struct SimulatedSignatures: RecordValidator {
    let secret: UInt64

    public init(secret: UInt64) { self.secret = secret }

    public func sign(key: NodeID, publisher: NodeID, payload: [UInt8], sequence: UInt64, expires: UInt64) -> Record {
        Record(
            key: key,
            publisher: publisher,
            value: payload
                + tag(key: key ^ publisher, payload: payload, sequence: sequence, expires: expires, secret: secret),
            sequence: sequence,
            expires: expires
        )
    }

    public func validate(_ record: Record) -> Bool {
        guard record.value.count >= 8 else { return false }
        let payload = Array(record.value.dropLast(8))
        return Array(record.value.suffix(8))
            == tag(
                key: record.key ^ record.publisher,
                payload: payload,
                sequence: record.sequence,
                expires: record.expires,
                secret: secret
            )
    }

    private func tag(key: NodeID, payload: [UInt8], sequence: UInt64, expires: UInt64, secret: UInt64) -> [UInt8] {
        var state = secret ^ sequence &* 31 ^ expires &* 17
        for byte in key.bytes + payload { state = Mixer.mix(state ^ UInt64(byte)) }
        return (0..<8).map { UInt8(truncatingIfNeeded: state >> (8 * $0)) }
    }
}

/// SplitMix64, for the simulator's own choices (latency, loss, who joins, who leaves).
public struct Mixer: RandomNumberGenerator {
    var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return Self.mix(state)
    }

    static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// N nodes of the real `KademliaNode` in one process, on virtual time: messages take a
/// seeded latency, some are lost, nodes join and leave. Nothing here reads a clock, so
/// the same configuration and seed give the same report.
public final class Simulation {
    public struct Configuration: Sendable {
        public var nodes = 2000
        public var seed: UInt64 = 1
        /// One-way latency, uniformly in this range (ms).
        public var latency: ClosedRange<UInt64> = 10...80
        /// Share of messages lost.
        public var loss = 0.01
        /// Node lookups measured in each phase.
        public var lookups = 1000
        /// Records published before the mass departure.
        public var records = 200
        /// Share of nodes that leave at once, then the share replaced while lookups run.
        public var churn = 1.0 / 3.0

        public init() {}
    }

    public struct Report: Sendable {
        public var lookups = 0
        public var lookupsSucceeded = 0
        public var hops: [Int] = []
        public var messages: [Int] = []
        public var tableAccuracy = 0.0
        public var records = 0
        public var recordsPublished = 0
        public var recordsFoundAfterDeparture = 0
        public var mergedKeys = 0
        public var mergedKeysComplete = 0
        public var churnLookups = 0
        public var churnLookupsSucceeded = 0
        public var churnUnfinished = 0
        public var forgedOffered = 0
        public var forgedAccepted = 0
        public var events = 0
        public var virtualSeconds = 0.0

        public var successRate: Double { lookups == 0 ? 0 : Double(lookupsSucceeded) / Double(lookups) }
        public var churnSuccessRate: Double {
            churnLookups == 0 ? 0 : Double(churnLookupsSucceeded) / Double(churnLookups)
        }

        public func percentile(_ values: [Int], _ p: Double) -> Int {
            guard !values.isEmpty else { return 0 }
            let sorted = values.sorted()
            return sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
        }
    }

    private struct Member {
        var node: KademliaNode
        var alive = true
        var joined: UInt64
    }

    private enum Payload {
        case deliver(Envelope, to: Int)
        case wake(Int)
        /// Publishing load: service record `slot` is republished by its node.
        case publish(slot: Int)
    }

    /// The heap orders small values; payloads wait in a side table until their turn.
    private struct Event: Comparable {
        var time: UInt64
        var sequence: UInt64

        static func < (left: Event, right: Event) -> Bool {
            (left.time, left.sequence) < (right.time, right.sequence)
        }
    }

    public let configuration: Configuration
    public let validator: SimulatedSignatures
    private var random: Mixer
    private var members: [Member] = []
    private var byID: [NodeID: Int] = [:]
    private var queue = Heap<Event>()
    private var payloads: [UInt64: Payload] = [:]
    private var sequence: UInt64 = 0
    private(set) var now: UInt64 = 0
    private var finished: [Int: [UInt64: LookupResult]] = [:]
    private var published: [NodeID: Int] = [:]
    public private(set) var report = Report()
    /// Publishing load: each slot's key, publisher and sequence; what is counted while
    /// `measuring`.
    private var slots: [(key: NodeID, publisher: Int, sequence: UInt64)] = []
    private var measuring = false
    fileprivate var load = LoadReport()
    fileprivate var loadTTL: UInt64 = 30_000_000_000
    fileprivate var loadSample: UInt64 = 97

    public init(_ configuration: Configuration) {
        self.configuration = configuration
        self.random = Mixer(seed: configuration.seed)
        self.validator = SimulatedSignatures(secret: Mixer.mix(configuration.seed ^ 0x5EC2E7))
    }

    // MARK: the run

    public func run() -> Report {
        let ms: UInt64 = 1_000_000
        // Join one node every 5 ms, each through a random node already in.
        for _ in 0..<configuration.nodes { join(); advance(by: 5 * ms) }
        // Past every node's first maintenance (60 s after it joined), where it looks
        // itself up again.
        advance(by: 70_000 * ms)
        report.tableAccuracy = tableAccuracy()

        // Steady state: node lookups between random live nodes.
        let steady = measureLookups(configuration.lookups)
        report.lookups = steady.issued
        report.lookupsSucceeded = steady.succeeded

        // Records, then a third of the nodes leave at once. One key in ten has three
        // publishers (the endpoints of one service), which every lookup must merge.
        var keys: [(key: NodeID, publishers: Int)] = []
        for number in 0..<configuration.records {
            let key = NodeID.random(using: &random)
            let publishers = number % 10 == 0 ? 3 : 1
            keys.append((key, publishers))
            for _ in 0..<publishers {
                let owner = randomAlive()
                let record = validator.sign(
                    key: key,
                    publisher: members[owner].node.contact.id,
                    payload: Array("record \(number)".utf8),
                    sequence: 1,
                    expires: now + 3_600_000 * ms
                )
                apply(members[owner].node.put(record, now: now), of: owner)
            }
        }
        advance(by: 20_000 * ms)
        report.records = keys.count
        report.recordsPublished = keys.filter { (published[$0.key] ?? 0) > 0 }.count
        report.mergedKeys = keys.filter { $0.publishers > 1 }.count
        offerForgeries(keys.map(\.key))

        let leaving = Array(
            aliveIndices().shuffled(using: &random).prefix(Int(Double(aliveIndices().count) * configuration.churn))
        )
        for index in leaving { members[index].alive = false }
        var valueLookups: [(Int, UInt64, NodeID, Int)] = []
        for (key, publishers) in keys {
            let asker = randomAlive()
            let (id, directives) = members[asker].node.findValue(key, now: now)
            valueLookups.append((asker, id, key, publishers))
            apply(directives, of: asker)
        }
        advance(by: 30_000 * ms)
        for (asker, id, key, publishers) in valueLookups {
            let found = finished[asker]?[id]?.records.filter { $0.key == key }.count ?? 0
            if found == publishers { report.recordsFoundAfterDeparture += 1 }
            if publishers > 1, found == publishers { report.mergedKeysComplete += 1 }
        }

        // Churn: one leaves and one joins every 20 ms while lookups run.
        let replaced = Int(Double(configuration.nodes) * configuration.churn)
        var churnLookups: [(Int, UInt64, NodeID)] = []
        for step in 0..<replaced {
            members[randomAlive()].alive = false
            join()
            if step % max(1, replaced / configuration.lookups) == 0 {
                let asker = randomAlive()
                // A node can be found once its join has run (its own lookup done): 10 s.
                let target = members[randomAlive(joinedBefore: now - min(now, 10_000 * ms))].node.contact.id
                let (id, directives) = members[asker].node.findNode(target, now: now)
                churnLookups.append((asker, id, target))
                apply(directives, of: asker)
            }
            advance(by: 20 * ms)
        }
        advance(by: 30_000 * ms)
        for (asker, id, target) in churnLookups {
            // A target that left cannot be found, an asker that left hears nothing: such
            // lookups are not counted either way.
            guard let index = byID[target], members[index].alive, members[asker].alive else { continue }
            report.churnLookups += 1
            if finished[asker]?[id] == nil { report.churnUnfinished += 1 }
            if finished[asker]?[id]?.closest.first?.id == target { report.churnLookupsSucceeded += 1 }
        }
        report.virtualSeconds = Double(now) / 1e9
        return report
    }

    /// Node lookups from random live nodes for random live nodes' IDs.
    private func measureLookups(_ count: Int) -> (issued: Int, succeeded: Int) {
        var issued: [(Int, UInt64, NodeID)] = []
        for _ in 0..<count {
            let asker = randomAlive()
            let target = members[randomAlive()].node.contact.id
            let (id, directives) = members[asker].node.findNode(target, now: now)
            issued.append((asker, id, target))
            apply(directives, of: asker)
            advance(by: 10_000_000)
        }
        advance(by: 30_000_000_000)
        var succeeded = 0
        for (asker, id, target) in issued {
            guard let result = finished[asker]?[id] else { continue }
            report.hops.append(result.hops)
            report.messages.append(result.messages)
            if result.closest.first?.id == target || members[asker].node.contact.id == target {
                succeeded += 1
            } else if ProcessInfo.processInfo.environment["DHT_SIM_DEBUG"] != nil {
                let position = result.closest.firstIndex { $0.id == target }.map(String.init) ?? "absent"
                let knownBy = members.filter { $0.alive && $0.node.table.contains(target) }.count
                let closestKnow = members.filter { $0.alive }.sorted {
                    target.isCloser($0.node.contact.id, than: $1.node.contact.id)
                }
                .dropFirst().prefix(5).map { $0.node.table.contains(target) }
                print(
                    "failed: target at \(position) of \(result.closest.count), hops \(result.hops), messages \(result.messages), known by \(knownBy), nearest 5 know it: \(closestKnow)"
                )
            }
        }
        return (issued.count, succeeded)
    }

    /// A node without the trust domain's key offers forged, expired and rolled-back
    /// records straight to the nodes holding the real ones.
    private func offerForgeries(_ keys: [NodeID]) {
        let forger = Contact(id: NodeID.random(using: &random), address: "forger")
        for key in keys.prefix(50) {
            let publisher = NodeID.random(using: &random)
            let real = validator.sign(
                key: key,
                publisher: publisher,
                payload: Array("genuine".utf8),
                sequence: 5,
                expires: now + 3_600_000_000_000
            )
            var forged = real
            forged.value = Array("evil".utf8) + Array(real.value.suffix(8))
            let expired = validator.sign(
                key: key,
                publisher: publisher,
                payload: Array("old".utf8),
                sequence: 9,
                expires: now
            )
            let rolledBack = validator.sign(
                key: key,
                publisher: publisher,
                payload: Array("rollback".utf8),
                sequence: 0,
                expires: now + 3_600_000_000_000
            )
            let holder = members[randomAlive()]
            var node = holder.node
            _ = node.receive(Envelope(from: forger, requestID: 1, message: .store(real), fromClient: true), now: now)
            for bad in [forged, expired, rolledBack] {
                report.forgedOffered += 1
                let answer = node.receive(
                    Envelope(from: forger, requestID: 2, message: .store(bad), fromClient: true),
                    now: now
                )
                if answer.contains(where: {
                    if case .send(let envelope, _) = $0, envelope.message == .stored(true) { true } else { false }
                }) {
                    report.forgedAccepted += 1
                }
            }
        }
    }

    // MARK: the world

    private func join() {
        let index = members.count
        let id = NodeID.random(using: &random)
        let configuration = KademliaNode.Configuration()
        let node = KademliaNode(
            contact: Contact(id: id, address: "sim:\(index)"),
            configuration: configuration,
            seed: random.next(),
            validator: validator
        )
        members.append(Member(node: node, joined: now))
        byID[id] = index
        let seeds = index == 0 ? [] : [members[randomAlive(below: index)].node.contact]
        apply(members[index].node.bootstrap(seeds: seeds, now: now), of: index)
    }

    private func aliveIndices() -> [Int] {
        members.indices.filter { members[$0].alive }
    }

    private func randomAlive(joinedBefore: UInt64 = .max, below: Int? = nil) -> Int {
        let range = UInt64(below ?? members.count)
        while true {
            let index = Int(random.next() % range)
            if members[index].alive, members[index].joined <= joinedBefore { return index }
        }
    }

    private func apply(_ directives: [KademliaNode.Directive], of index: Int) {
        for directive in directives {
            switch directive {
            case .send(let envelope, let contact):
                if measuring { count(envelope) }
                guard let target = byID[contact.id] else { continue }
                if Double(random.next() % 1_000_000) / 1_000_000 < configuration.loss { continue }
                let span = configuration.latency.upperBound - configuration.latency.lowerBound + 1
                let delay = (configuration.latency.lowerBound + random.next() % span) * 1_000_000
                schedule(.deliver(envelope, to: target), at: now + delay)
            case .wake(let time):
                schedule(.wake(index), at: time)
            case .finished(let lookup, let result):
                finished[index, default: [:]][lookup] = result
            case .published(let key, let replicas):
                published[key] = replicas
            }
        }
    }

    private func schedule(_ payload: Payload, at time: UInt64) {
        sequence += 1
        payloads[sequence] = payload
        queue.push(Event(time: time, sequence: sequence))
    }

    /// Runs every event up to `now + duration`.
    private func advance(by duration: UInt64) {
        let end = now + duration
        while let next = queue.peek, next.time <= end {
            _ = queue.pop()
            now = next.time
            report.events += 1
            guard let payload = payloads.removeValue(forKey: next.sequence) else { continue }
            switch payload {
            case .deliver(let envelope, let index):
                guard members[index].alive else { continue }
                apply(members[index].node.receive(envelope, now: now), of: index)
            case .wake(let index):
                guard members[index].alive else { continue }
                apply(members[index].node.tick(now: now), of: index)
            case .publish(let slot):
                republish(slot)
            }
        }
        now = end
    }

    /// Share of live nodes whose table holds at least 18 of their 20 true closest live peers.
    private func tableAccuracy() -> Double {
        let alive = aliveIndices()
        let ids = alive.map { members[$0].node.contact.id }
        var accurate = 0
        for index in alive {
            let own = members[index].node.contact.id
            var best: [NodeID] = []
            for id in ids where id != own {
                let distance = own ^ id
                if best.count == 20, !(distance < best[19]) { continue }
                var position = best.count
                while position > 0, distance < best[position - 1] { position -= 1 }
                best.insert(distance, at: position)
                if best.count > 20 { best.removeLast() }
            }
            let table = members[index].node.table
            let known = best.filter { table.contains($0 ^ own) }.count
            if known >= 18 { accurate += 1 }
        }
        return alive.isEmpty ? 0 : Double(accurate) / Double(alive.count)
    }
}

// MARK: publishing load

extension Simulation {
    /// What the mesh's service records cost the DHT in steady state: every node
    /// publishes `recordsPerNode` records (its pods' endpoints) with a `ttl` and
    /// republishes each every `ttl / 3`, as a sidecar does. Pods start at any time, so
    /// the records' first publishes are spread over `spread` (by default the nodes'
    /// `holderReuse`: every phase of reusing and renewing holders is then under way at
    /// once, as in a mesh that has run for a while); once all have started and one
    /// more round has passed, every message sent during `window` is counted, by kind.
    public struct LoadConfiguration: Sendable {
        public var recordsPerNode = 10
        public var ttl: UInt64 = 30_000_000_000
        public var spread = KademliaNode.Configuration().holderReuse
        public var window: UInt64 = 60_000_000_000
        /// Every this many messages, one is encoded to measure its size on the wire.
        public var sizeSample = 97

        public init() {}
    }

    public struct LoadReport: Sendable {
        public var nodes = 0
        public var records = 0
        public var windowSeconds = 0.0
        public var messages = 0
        public var byKind: [String: Int] = [:]
        public var sampledMessages = 0
        public var sampledBytes = 0
        public var publishes = 0
        public var events = 0

        /// Messages each node sends per second, on average.
        public var messagesPerNodePerSecond: Double {
            nodes == 0 || windowSeconds == 0 ? 0 : Double(messages) / Double(nodes) / windowSeconds
        }

        /// Bytes on the wire per message, from the sample (simulated records are smaller
        /// than real ones: see `bytesPerStore`).
        public var bytesPerMessage: Double {
            sampledMessages == 0 ? 0 : Double(sampledBytes) / Double(sampledMessages)
        }
    }

    /// Builds the network as `run` does, then runs the publishing load.
    public func runPublishingLoad(_ settings: LoadConfiguration) -> LoadReport {
        let ms: UInt64 = 1_000_000
        for _ in 0..<configuration.nodes { join(); advance(by: 5 * ms) }
        advance(by: 70_000 * ms)
        let period = settings.ttl / 3
        for index in members.indices {
            for _ in 0..<settings.recordsPerNode {
                slots.append((NodeID.random(using: &random), index, 0))
                schedule(.publish(slot: slots.count - 1), at: now + random.next() % max(1, settings.spread))
            }
        }
        loadTTL = settings.ttl
        advance(by: settings.spread + period + 2_000 * ms)  // every record under way, one more round
        load = LoadReport()
        load.nodes = configuration.nodes
        load.records = slots.count
        loadSample = UInt64(settings.sizeSample)
        measuring = true
        let before = report.events
        advance(by: settings.window)
        measuring = false
        load.events = report.events - before
        load.windowSeconds = Double(settings.window) / 1e9
        return load
    }

    fileprivate func republish(_ slot: Int) {
        slots[slot].sequence += 1
        let (key, index, sequence) = slots[slot]
        let record = validator.sign(
            key: key,
            publisher: members[index].node.contact.id,
            payload: Array("10.88.\(slot % 250).\(slot % 200):31000 orders".utf8),
            sequence: sequence,
            expires: now + loadTTL
        )
        if measuring { load.publishes += 1 }
        apply(members[index].node.put(record, now: now), of: index)
        schedule(.publish(slot: slot), at: now + loadTTL / 3)
    }

    fileprivate func count(_ envelope: Envelope) {
        load.messages += 1
        let kind: String
        switch envelope.message {
        case .ping: kind = "ping"
        case .pong: kind = "pong"
        case .findNode: kind = "findNode"
        case .nodes: kind = "nodes"
        case .findValue: kind = "findValue"
        case .values: kind = "values"
        case .store: kind = "store"
        case .stored: kind = "stored"
        }
        load.byKind[kind, default: 0] += 1
        if UInt64(load.messages) % loadSample == 0 {
            load.sampledMessages += 1
            load.sampledBytes += WireCodec.encode(envelope).count
        }
    }
}

extension Simulation.LoadReport {
    /// The simulator's printout of the publishing load; `bytesPerStore` is the size of
    /// one store message carrying a real signed service record.
    public func rendered(bytesPerStore: Int?) -> String {
        let kinds = byKind.sorted { $0.value > $1.value }
            .map { "\($0.key) \(String(format: "%.1f", Double($0.value) / Double(nodes) / windowSeconds))" }
            .joined(separator: ", ")
        var lines = [
            "publishing load: \(nodes) nodes, \(records) records (\(records / max(1, nodes)) per node), republished every ttl/3",
            "messages sent per node per second  \(String(format: "%.1f", messagesPerNodePerSecond)) (\(kinds))",
            "republishes in the window          \(publishes) (\(String(format: "%.2f", Double(publishes) / Double(nodes) / windowSeconds)) per node per second)",
            "bytes per message (sampled)        \(String(format: "%.0f", bytesPerMessage)) simulated",
        ]
        if let bytesPerStore {
            lines.append("bytes per store with a real record \(bytesPerStore)")
        }
        lines.append("events \(events) in \(String(format: "%.0f", windowSeconds)) s measured")
        return lines.joined(separator: "\n")
    }
}

/// A binary min-heap.
struct Heap<Element: Comparable> {
    private var items: [Element] = []

    var peek: Element? { items.first }

    mutating func push(_ item: Element) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let top = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < items.count, items[left] < items[smallest] { smallest = left }
            if right < items.count, items[right] < items[smallest] { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}

extension Simulation.Report {
    /// The simulator's printout.
    public func rendered(_ configuration: Simulation.Configuration) -> String {
        func percent(_ value: Double) -> String { String(format: "%.2f%%", value * 100) }
        let messagesPerLookup = messages.isEmpty ? 0 : Double(messages.reduce(0, +)) / Double(messages.count)
        return """
            nodes \(configuration.nodes), seed \(configuration.seed), latency \(configuration.latency.lowerBound)-\(configuration.latency.upperBound) ms, loss \(percent(configuration.loss)), k 20, alpha 3
            lookup success (steady)          \(percent(successRate)) of \(lookups)
            hops p50 / p99                    \(percentile(hops, 0.5)) / \(percentile(hops, 0.99))
            messages per lookup               \(String(format: "%.1f", messagesPerLookup))
            routing-table accuracy            \(percent(tableAccuracy)) of live nodes know >= 18 of their 20 closest
            records published                 \(recordsPublished) of \(records)
            records found after \(percent(configuration.churn)) left   \(recordsFoundAfterDeparture) of \(records) (all publishers of the \(mergedKeys) keys with three: \(mergedKeysComplete))
            lookup success (churn)            \(percent(churnSuccessRate)) of \(churnLookups) (\(churnUnfinished) unfinished)
            forged/expired/rolled-back stored \(forgedAccepted) of \(forgedOffered)
            events \(events), virtual time \(String(format: "%.1f", virtualSeconds)) s
            """
    }
}
