import Raft

/// Raft groups on virtual time: members, a network, a disk per member and clients of
/// a key-value store, all driven by one seeded generator, so a seed replays exactly
/// (the trace hash says so). Faults come from the same generator: partitions
/// (symmetric, asymmetric, one member isolated), message loss, duplication and
/// reordering (random latency), crash-restart (a member may crash in the middle of
/// what one event asked of it, keeping a prefix of the entries it was writing: a
/// torn tail), clock drift, and membership changes while all that happens.
///
/// Every client operation is recorded as invoked and then ok, failed (known not to
/// have happened) or unknown, and the history is decided by `LinearizabilityChecker`.
public struct RaftSimulator {
    public struct Settings: Sendable {
        public var seed: UInt64
        public var members = 3
        public var heartbeat: UInt64 = 100_000_000
        public var electionMin: UInt64 = 1_000_000_000
        public var electionMax: UInt64 = 2_000_000_000
        public var preVote = true
        public var checkQuorum = true
        /// Faults and the workload run this long; then the faults stop, the last one
        /// heals, and the workload runs `settle` more.
        public var duration: UInt64 = 20_000_000_000
        public var settle: UInt64 = 8_000_000_000
        public var clients = 4
        public var keys = 3
        /// One-way latency of a message; random within, so messages reorder.
        public var latency: ClosedRange<UInt64> = 1_000_000...8_000_000
        public var loss = 0.0
        public var duplication = 0.0
        public var faults = true
        /// A fault lasts this long, and the next starts this long after.
        public var faultLength: ClosedRange<UInt64> = 500_000_000...4_000_000_000
        public var faultGap: ClosedRange<UInt64> = 200_000_000...2_000_000_000
        /// Member clocks run at rates within 1 ± drift.
        public var drift = 0.0
        public var membershipChanges = false
        /// Applied entries between snapshots (0: none).
        public var snapshotEvery = 0
        /// A client waits this long for an answer, then records the outcome unknown.
        public var requestTimeout: UInt64 = 3_000_000_000

        public init(seed: UInt64) { self.seed = seed }
    }

    public struct Report: Sendable {
        public var history: [KVOperation] = []
        public var verdict = LinearizabilityChecker.Verdict(linearizable: true, key: nil, steps: 0)
        public var traceHash: UInt64 = 0xcbf2_9ce4_8422_2325
        public var lastHeal: UInt64?
        /// From the last heal until a leader that has committed an entry of its own
        /// term is heard from (at once, if one served through the fault).
        public var recovery: UInt64?
        /// Leaders elected (a member becoming leader of a term).
        public var elections = 0
        public var maxTerm: UInt64 = 0
        public var committed: UInt64 = 0
        public var acknowledgedWrites = 0
        public var messages = 0
        /// Raft's own invariants broken: two leaders of one term, or two members that
        /// applied different entries at one index (each described).
        public var safetyViolations: [String] = []
    }

    // MARK: the world

    private struct PendingOperation {
        var client: Int
        var operation: Int
    }

    private struct Member {
        var raft: Raft?
        var disk = RaftStorage()
        var kv: [String: String] = [:]
        var applied: UInt64 = 0
        var clockRate = 1.0
        var clockOffset: UInt64 = 0
        var generation = 0
        var restarts = 0
        /// Proposals by log index, answered when that index applies.
        var proposals: [UInt64: PendingOperation] = [:]
        /// Reads by id; then by the index they wait for.
        var reads: [UInt64: PendingOperation] = [:]
        var readyReads: [(index: UInt64, pending: PendingOperation)] = []
        var tornWrite = false
        var sinceSnapshot = 0
        /// When the member's latest timer fires (global time); earlier ones are stale.
        var wakeDue: UInt64?
    }

    private enum Request {
        case get(String)
        case put(String, String)
        case cas(String, expected: String?, new: String)
    }

    private struct Client {
        var leaderHint: Int?
        var current: Int?
        var operations = 0
    }

    private enum Event {
        case deliver(RaftMessage)
        case wake(member: Int, due: UInt64)
        case clientNext(client: Int)
        case arrive(member: Int, client: Int, operation: Int, request: Request)
        case reply(client: Int, operation: Int, outcome: KVOperation.Outcome, leader: Int?)
        case timeout(client: Int, operation: Int)
        case faultStart
        case heal
        case crash(member: Int)
        case restart(member: Int)
        case membership
    }

    private let settings: Settings
    private var random: SeededGenerator
    private var now: UInt64 = 0
    private var queue = EventQueue<Event>()
    private var members: [Member] = []
    private var ids: [RaftID] = []
    private var clients: [Client] = []
    /// Client operations by client and number: their history entry.
    private var operations: [[Int: Int]] = []
    private var report = Report()
    private var blocked: Set<[Int]> = []
    private var down: Set<Int> = []
    private var faultActive = false
    private var lastCommitByLeader: UInt64 = 0
    /// Who led each term, and the term of the entry applied at each index.
    private var leaders: [UInt64: Int] = [:]
    private var appliedTerms: [UInt64: UInt64] = [:]
    /// Timestamps of the history: the time, then the order of events at that time.
    private var stampTime: UInt64 = 0
    private var stampCount: UInt64 = 0
    public private(set) var leaderCommits: [(time: UInt64, member: Int, term: UInt64)] = []

    public init(_ settings: Settings) {
        self.settings = settings
        random = SeededGenerator(seed: settings.seed)
        // With membership changes, one more member waits outside the group to join it.
        let count = settings.members + (settings.membershipChanges ? 1 : 0)
        ids = (0..<count).map { RaftID($0 + 1) }
        for index in 0..<count {
            var member = Member()
            if settings.drift > 0 {
                member.clockRate = 1 + (Double(random.next() % 2001) / 1000 - 1) * settings.drift
            }
            member.clockOffset = random.next() % 1_000_000_000_000
            members.append(member)
            start(index)
        }
        clients = Array(repeating: Client(), count: settings.clients)
        operations = Array(repeating: [:], count: settings.clients)
        for client in 0..<settings.clients { schedule(in: random.next() % 50_000_000, .clientNext(client: client)) }
        if settings.faults { schedule(in: 2_000_000_000, .faultStart) }
        if settings.membershipChanges { schedule(in: 3_000_000_000, .membership) }
    }

    /// Runs to the end and decides the history.
    public mutating func run() -> Report {
        let end = settings.duration + settings.settle
        while let (time, event) = queue.pop(), time <= end {
            now = time
            handle(event)
        }
        for client in 0..<settings.clients {
            if let operation = clients[client].current { finish(client, operation, .unknown) }
        }
        report.verdict = LinearizabilityChecker.check(report.history)
        report.maxTerm = members.compactMap { $0.raft?.term }.max() ?? 0
        return report
    }

    /// Runs until `until` (virtual ns), for scenarios that act in between.
    public mutating func run(until: UInt64) {
        while let time = queue.peekTime(), time <= until, let (_, event) = queue.pop() {
            now = time
            handle(event)
        }
        now = until
    }

    // MARK: scenarios' handles

    public var time: UInt64 { now }
    public var leader: Int? {
        members.indices.first { members[$0].raft?.role == .leader && !down.contains($0) }
    }
    public func term(of member: Int) -> UInt64 { members[member].raft?.term ?? 0 }

    public mutating func crash(_ member: Int) { crashMember(member, torn: false) }

    public mutating func isolate(_ member: Int) {
        for other in members.indices where other != member {
            blocked.insert([member, other])
            blocked.insert([other, member])
        }
    }

    public mutating func healNetwork() { blocked = [] }

    /// One line per member: up or down, role, term, commit, last index, voters.
    public var status: String {
        members.indices.map { index in
            guard let raft = members[index].raft, !down.contains(index) else { return "  \(index + 1): down" }
            let cut = blocked.contains { $0.contains(index) } ? " (cut off from some)" : ""
            return "  \(index + 1): \(raft.role) term \(raft.term) commit \(raft.commit) last \(raft.lastIndex) "
                + "voters \(raft.membership.voters) learners \(raft.membership.learners)\(cut)"
        }
        .joined(separator: "\n")
    }

    public var summary: Report {
        var copy = report
        copy.maxTerm = members.compactMap { $0.raft?.term }.max() ?? 0
        return copy
    }

    // MARK: events

    private mutating func schedule(in delay: UInt64, _ event: Event) {
        queue.push(now + delay, event)
    }

    private mutating func mix(_ values: UInt64...) {
        for value in values {
            report.traceHash = (report.traceHash ^ value) &* 0x0000_0100_0000_01B3
        }
    }

    private mutating func handle(_ event: Event) {
        switch event {
        case .deliver(let message):
            let member = Int(message.to - 1)
            mix(1, now, message.from, message.to, message.term)
            guard !down.contains(member), !blocked.contains([Int(message.from - 1), member]) else { return }
            let time = localTime(member)
            step(member) { $0.receive(message, now: time) }
        case .wake(let member, let due):
            // Only the latest timer of a running member counts.
            guard members[member].wakeDue == due, !down.contains(member) else { return }
            members[member].wakeDue = nil
            mix(2, now, UInt64(member))
            let time = localTime(member)
            step(member) { $0.tick(now: time) }
        case .clientNext(let client):
            issue(client)
        case .arrive(let member, let client, let operation, let request):
            serve(member, client: client, operation: operation, request: request)
        case .reply(let client, let operation, let outcome, let leader):
            guard clients[client].current == operation else { return }
            clients[client].leaderHint = outcome == .failed ? leader : clients[client].leaderHint
            finish(client, operation, outcome)
        case .timeout(let client, let operation):
            guard clients[client].current == operation else { return }
            clients[client].leaderHint = nil
            finish(client, operation, .unknown)
        case .faultStart:
            startFault()
        case .heal:
            blocked = []
            faultActive = false
            report.lastHeal = now
            report.recovery = nil
            if now < settings.duration { schedule(in: pick(settings.faultGap), .faultStart) }
        case .crash(let member):
            crashMember(member, torn: false)
        case .restart(let member):
            guard down.contains(member) else { return }
            down.remove(member)
            start(member)
        case .membership:
            changeMembership()
        }
    }

    // MARK: members

    private func localTime(_ member: Int) -> UInt64 {
        members[member].clockOffset + UInt64(Double(now) * members[member].clockRate)
    }

    private func globalDelay(_ member: Int, untilLocal deadline: UInt64) -> UInt64 {
        let local = localTime(member)
        guard deadline > local else { return 0 }
        return UInt64(Double(deadline - local) / members[member].clockRate) + 1
    }

    private mutating func start(_ index: Int) {
        var configuration = Raft.Configuration(id: ids[index])
        configuration.heartbeatInterval = settings.heartbeat
        configuration.electionTimeoutMin = settings.electionMin
        configuration.electionTimeoutMax = settings.electionMax
        configuration.preVote = settings.preVote
        configuration.checkQuorum = settings.checkQuorum
        var member = members[index]
        member.generation += 1
        member.kv = [:]
        member.applied = member.disk.snapshot?.index ?? 0
        if let snapshot = member.disk.snapshot { member.kv = Self.decode(snapshot.data) }
        member.proposals = [:]
        member.reads = [:]
        member.readyReads = []
        member.sinceSnapshot = 0
        var raft = Raft(
            configuration: configuration,
            storage: member.disk,
            bootstrap: index < settings.members
                ? Membership(voters: Array(ids.prefix(settings.members))) : Membership(voters: []),
            seed: settings.seed &+ UInt64(member.restarts) &* 7919
        )
        member.restarts += 1
        let directives = raft.start(now: localTime(index))
        member.raft = raft
        members[index] = member
        carry(index, directives)
    }

    private mutating func crashMember(_ member: Int, torn: Bool) {
        guard !down.contains(member), members[member].raft != nil else { return }
        if torn {
            members[member].tornWrite = true  // the next event's writes are cut short
            return
        }
        down.insert(member)
        members[member].raft = nil
        members[member].generation += 1
        members[member].wakeDue = nil
        mix(3, now, UInt64(member))
    }

    /// Carries out one event's directives in order, as a shell would; a member marked
    /// to crash mid-write stops at a random directive, keeping a prefix of the entries
    /// of the write it was in.
    private mutating func carry(_ member: Int, _ directives: [Raft.Directive]) {
        var cut = Int.max
        if members[member].tornWrite {
            members[member].tornWrite = false
            cut = Int(random.next() % UInt64(directives.count + 1))
        }
        for (position, directive) in directives.enumerated() {
            if position == cut {
                if case .persist(let state, let entries) = directive {
                    let kept = Int(random.next() % UInt64(entries.count + 1))
                    write(member, state: random.next() % 2 == 0 ? state : nil, entries: Array(entries.prefix(kept)))
                }
                down.insert(member)
                members[member].raft = nil
                members[member].generation += 1
                members[member].wakeDue = nil
                mix(4, now, UInt64(member), UInt64(position))
                schedule(in: pick(settings.faultLength) / 2, .restart(member: member))
                return
            }
            perform(member, directive)
        }
        if cut != .max, cut >= directives.count {
            down.insert(member)
            members[member].raft = nil
            members[member].generation += 1
            members[member].wakeDue = nil
            schedule(in: pick(settings.faultLength) / 2, .restart(member: member))
        }
        afterEvent(member)
    }

    /// Runs one event of a member's Raft in place (a copy would copy its whole log).
    private mutating func step(_ member: Int, _ event: (inout Raft) -> [Raft.Directive]) {
        guard members[member].raft != nil else { return }
        let directives = event(&members[member].raft!)
        carry(member, directives)
    }

    private mutating func write(_ member: Int, state: HardState?, entries: [LogEntry]) {
        if let state { members[member].disk.hardState = state }
        guard let first = entries.first else { return }
        // The disk's entries are contiguous: the new ones replace those from their first on.
        if let start = members[member].disk.entries.first?.index, first.index >= start {
            let keep = Int(first.index - start)
            if keep < members[member].disk.entries.count {
                members[member].disk.entries.removeSubrange(keep...)
            }
        } else {
            members[member].disk.entries.removeAll()
        }
        members[member].disk.entries += entries
    }

    private mutating func perform(_ member: Int, _ directive: Raft.Directive) {
        switch directive {
        case .persist(let state, let entries):
            write(member, state: state, entries: entries)
        case .installSnapshot(let snapshot):
            members[member].disk.snapshot = snapshot
            members[member].disk.entries = []
            members[member].kv = Self.decode(snapshot.data)
            members[member].applied = snapshot.index
        case .send(let message):
            report.messages += 1
            send(message)
        case .apply(let entries):
            for entry in entries { apply(member, entry) }
        case .readReady(let id, let index):
            if let pending = members[member].reads.removeValue(forKey: id) {
                members[member].readyReads.append((index, pending))
            }
        case .readFailed(let id, let leader):
            if let pending = members[member].reads.removeValue(forKey: id) {
                respond(member, pending, .unknown, failed: true, leader: leader.map { Int($0 - 1) })
            }
        case .leaderChanged(let leader, let term):
            if leader == ids[member] {
                report.elections += 1
                if let other = leaders[term], other != member {
                    report.safetyViolations.append("members \(other + 1) and \(member + 1) both led term \(term)")
                }
                leaders[term] = member
            }
            mix(5, now, UInt64(member), leader ?? 0)
        case .wake(let at):
            let due = now + globalDelay(member, untilLocal: at)
            guard members[member].wakeDue != due else { return }
            members[member].wakeDue = due
            schedule(in: due - now, .wake(member: member, due: due))
        }
    }

    /// After an event: reads whose index applied are answered, a snapshot is taken
    /// when due, and a leader's commit is noted.
    private mutating func afterEvent(_ member: Int) {
        guard members[member].raft != nil else { return }
        var remaining: [(index: UInt64, pending: PendingOperation)] = []
        for (index, pending) in members[member].readyReads {
            if members[member].applied >= index {
                let key = operationKey(pending)
                respond(member, pending, .value(members[member].kv[key]), failed: false, leader: nil)
            } else {
                remaining.append((index, pending))
            }
        }
        members[member].readyReads = remaining
        if let raft = members[member].raft, raft.role == .leader, raft.commit > lastCommitByLeader {
            lastCommitByLeader = raft.commit
            report.committed = raft.commit
            leaderCommits.append((now, member, raft.term))
        }
        // Recovered: a leader serves, and nobody running knows of a later term.
        if let raft = members[member].raft, raft.leadsWithCommit, let heal = report.lastHeal, report.recovery == nil,
            now >= heal, members.indices.allSatisfy({ down.contains($0) || (members[$0].raft?.term ?? 0) <= raft.term })
        {
            report.recovery = now - heal
        }
        if settings.snapshotEvery > 0, members[member].sinceSnapshot >= settings.snapshotEvery {
            members[member].sinceSnapshot = 0
            let data = Self.encode(members[member].kv)
            let applied = members[member].applied
            if let snapshot = members[member].raft!.snapshotTaken(index: applied, data: data) {
                members[member].disk.snapshot = snapshot
                members[member].disk.entries.removeAll { $0.index <= snapshot.index }
            }
        }
    }

    private mutating func send(_ message: RaftMessage) {
        let from = Int(message.from - 1)
        let to = Int(message.to - 1)
        guard to >= 0, to < members.count else { return }
        if blocked.contains([from, to]) { return }
        if settings.loss > 0, Double(random.next() % 1_000_000) / 1_000_000 < settings.loss { return }
        schedule(in: pick(settings.latency), .deliver(message))
        if settings.duplication > 0, Double(random.next() % 1_000_000) / 1_000_000 < settings.duplication {
            schedule(in: pick(settings.latency), .deliver(message))
        }
    }

    // MARK: the key-value state machine

    private mutating func apply(_ member: Int, _ entry: LogEntry) {
        members[member].applied = entry.index
        if let term = appliedTerms[entry.index], term != entry.term {
            report.safetyViolations.append(
                "member \(member + 1) applied index \(entry.index) of term \(entry.term), another member term \(term)"
            )
        }
        appliedTerms[entry.index] = entry.term
        members[member].sinceSnapshot += 1
        let pending = members[member].proposals.removeValue(forKey: entry.index)
        guard case .command(let bytes) = entry.kind else {
            if let pending { respond(member, pending, .unknown, failed: true, leader: nil) }
            return
        }
        let parts = String(decoding: bytes, as: UTF8.self).split(separator: "|", omittingEmptySubsequences: false)
            .map(String.init)
        // client|operation|verb|key|values...
        let key = parts[3]
        var outcome = KVOperation.Outcome.done
        switch parts[2] {
        case "put":
            members[member].kv[key] = parts[4]
        case "cas":
            let expected = parts[4] == "-" ? nil : parts[4]
            let swapped = members[member].kv[key] == expected
            if swapped { members[member].kv[key] = parts[5] }
            outcome = .swapped(swapped)
        default:
            break
        }
        guard let pending else { return }
        if Int(parts[0]) == pending.client, Int(parts[1]) == pending.operation {
            respond(member, pending, outcome, failed: false, leader: nil)
        } else {
            // Another entry took this index: the proposal never commits.
            respond(member, pending, .unknown, failed: true, leader: nil)
        }
    }

    static func encode(_ kv: [String: String]) -> [UInt8] {
        Array(kv.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "\n").utf8)
    }

    static func decode(_ data: [UInt8]) -> [String: String] {
        var kv: [String: String] = [:]
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            let pair = line.split(separator: "=", maxSplits: 1).map(String.init)
            if pair.count == 2 { kv[pair[0]] = pair[1] }
        }
        return kv
    }

    // MARK: clients

    private mutating func issue(_ client: Int) {
        guard now < settings.duration + settings.settle else { return }
        let number = clients[client].operations
        clients[client].operations += 1
        let key = "k\(random.next() % UInt64(settings.keys))"
        let value = "c\(client)-\(number)"
        let request: Request
        let kind: KVOperation.Kind
        switch random.next() % 10 {
        case 0..<4:
            request = .get(key)
            kind = .get
        case 4..<8:
            request = .put(key, value)
            kind = .put(value)
        default:
            // A swap from a value this client may have seen: the last put of any client.
            let expected: String? =
                random.next() % 4 == 0 ? nil : "c\(random.next() % UInt64(settings.clients))-\(max(0, number - 1))"
            request = .cas(key, expected: expected, new: value)
            kind = .cas(expected: expected, new: value)
        }
        operations[client][number] = report.history.count
        report.history.append(
            KVOperation(client: client, key: key, kind: kind, outcome: .unknown, called: stamp(), returned: .max)
        )
        clients[client].current = number
        let target = clients[client].leaderHint ?? Int(random.next() % UInt64(members.count))
        schedule(
            in: pick(settings.latency),
            .arrive(member: target, client: client, operation: number, request: request)
        )
        schedule(in: settings.requestTimeout, .timeout(client: client, operation: number))
    }

    private mutating func finish(_ client: Int, _ operation: Int, _ outcome: KVOperation.Outcome) {
        guard let position = operations[client][operation] else { return }
        clients[client].current = nil
        report.history[position].outcome = outcome
        report.history[position].returned = stamp()
        if outcome != .unknown, outcome != .failed, report.history[position].kind != .get {
            report.acknowledgedWrites += 1
        }
        schedule(in: 1_000_000 + random.next() % 20_000_000, .clientNext(client: client))
    }

    /// The time in the history: nanoseconds times 1,024 plus the order of the call or
    /// return among those at the same nanosecond, so that the checker sees events of one
    /// instant in the order they happened.
    private mutating func stamp() -> UInt64 {
        if now != stampTime {
            stampTime = now
            stampCount = 0
        }
        stampCount = min(stampCount + 1, 1023)
        return now << 10 | stampCount
    }

    private func operationKey(_ pending: PendingOperation) -> String {
        operations[pending.client][pending.operation].map { report.history[$0].key } ?? ""
    }

    private mutating func serve(_ member: Int, client: Int, operation: Int, request: Request) {
        guard !down.contains(member), let leader = members[member].raft?.leader else {
            if !down.contains(member), members[member].raft != nil {
                respond(
                    member,
                    PendingOperation(client: client, operation: operation),
                    .failed,
                    failed: true,
                    leader: nil
                )
            }
            return  // a member that is down: the client times out
        }
        let pending = PendingOperation(client: client, operation: operation)
        let hint = Int(leader - 1)
        let time = localTime(member)
        switch request {
        case .get:
            let id = UInt64(client) << 40 | UInt64(operation)
            members[member].reads[id] = pending
            step(member) { $0.read(id, now: time) }
        case .put(let key, let value), .cas(let key, _, let value):
            var text = "\(client)|\(operation)|put|\(key)|\(value)"
            if case .cas(_, let expected, _) = request {
                text = "\(client)|\(operation)|cas|\(key)|\(expected ?? "-")|\(value)"
            }
            do {
                let (index, directives) = try members[member].raft!.propose(Array(text.utf8), now: time)
                members[member].proposals[index] = pending
                carry(member, directives)
            } catch {
                respond(member, pending, .failed, failed: true, leader: hint)
            }
        }
    }

    /// An answer travels back to the client; `failed`: the operation is known not to
    /// have happened, and is left out of the history.
    private mutating func respond(
        _ member: Int,
        _ pending: PendingOperation,
        _ outcome: KVOperation.Outcome,
        failed: Bool,
        leader: Int?
    ) {
        schedule(
            in: pick(settings.latency),
            .reply(
                client: pending.client,
                operation: pending.operation,
                outcome: failed ? .failed : outcome,
                leader: leader
            )
        )
    }

    // MARK: faults

    private mutating func pick(_ range: ClosedRange<UInt64>) -> UInt64 {
        range.lowerBound + random.next() % (range.upperBound - range.lowerBound + 1)
    }

    private mutating func startFault() {
        guard now < settings.duration, !faultActive else { return }
        faultActive = true
        let count = members.count
        let length = pick(settings.faultLength)
        switch random.next() % 5 {
        case 0:  // symmetric partition: a minority and a majority
            var order = Array(0..<count)
            order.shuffle(using: &random)
            let minority = Set(order.prefix((count - 1) / 2))
            for a in 0..<count {
                for b in 0..<count where minority.contains(a) != minority.contains(b) { blocked.insert([a, b]) }
            }
        case 1:  // asymmetric: one member can send but not hear (or the reverse)
            let member = Int(random.next() % UInt64(count))
            let deaf = random.next() % 2 == 0
            for other in 0..<count where other != member {
                blocked.insert(deaf ? [other, member] : [member, other])
            }
        case 2:  // one member isolated
            isolate(Int(random.next() % UInt64(count)))
        case 3:  // the leader (or anyone) crashes, maybe mid-write, and restarts
            let member = leader ?? Int(random.next() % UInt64(count))
            handle(.crash(member: member))
            schedule(in: length, .restart(member: member))
        default:  // a member crashes in the middle of a write (it restarts by itself)
            crashMember(Int(random.next() % UInt64(count)), torn: true)
        }
        mix(6, now)
        schedule(in: length, .heal)
    }

    /// One server at a time, read from the serving leader's membership: a learner is
    /// promoted (once caught up), else the member outside the group joins as a
    /// learner, else (all vote) a voter other than the leader is removed and waits
    /// outside in its turn; repeated while the run lasts.
    private mutating func changeMembership() {
        defer {
            if now < settings.duration { schedule(in: 700_000_000, .membership) }
        }
        guard
            let leader = members.indices.filter({ members[$0].raft?.leadsWithCommit == true && !down.contains($0) })
                .max(by: { term(of: $0) < term(of: $1) }),
            let membership = members[leader].raft?.membership
        else { return }
        let change: MembershipChange
        if let learner = membership.learners.first {
            change = .promote(learner)
        } else if let outside = ids.first(where: { !membership.contains($0) }) {
            change = .addLearner(outside)
        } else {
            let voters = membership.voters.filter { $0 != ids[leader] }
            guard !voters.isEmpty else { return }
            change = .remove(voters[Int(random.next() % UInt64(voters.count))])
        }
        do {
            let directives = try members[leader].raft!.changeMembership(change, now: localTime(leader))
            mix(7, now)
            carry(leader, directives)
        } catch {
            // Not yet (a change pending, the learner behind): the next round.
        }
    }
}

/// A binary heap of events by time, then by insertion order (so equal times replay
/// in the same order). The heap moves small keys; the events stay in their slots.
struct EventQueue<Element> {
    private struct Key {
        var time: UInt64
        var order: UInt64
        var slot: Int
    }

    private var heap: [Key] = []
    private var slots: [Element?] = []
    private var free: [Int] = []
    private var counter: UInt64 = 0

    mutating func push(_ time: UInt64, _ element: Element) {
        counter += 1
        let slot: Int
        if let reused = free.popLast() {
            slot = reused
            slots[slot] = element
        } else {
            slot = slots.count
            slots.append(element)
        }
        heap.append(Key(time: time, order: counter, slot: slot))
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard less(heap[child], heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    func peekTime() -> UInt64? { heap.first?.time }

    mutating func pop() -> (UInt64, Element)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count, less(heap[left], heap[smallest]) { smallest = left }
            if right < heap.count, less(heap[right], heap[smallest]) { smallest = right }
            guard smallest != parent else { break }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
        let element = slots[top.slot]!
        slots[top.slot] = nil
        free.append(top.slot)
        return (top.time, element)
    }

    private func less(_ a: Key, _ b: Key) -> Bool {
        a.time < b.time || (a.time == b.time && a.order < b.order)
    }
}
