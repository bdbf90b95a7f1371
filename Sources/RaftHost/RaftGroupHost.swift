import Logging
import MeshAPI
import MeshConfiguration
import Metrics
import NIOCore
import NIOPosix
import Raft
import RaftPersistence

/// Where a group's messages go: the transport between agents.
public protocol RaftMessageSink: AnyObject, Sendable {
    func send(_ message: RaftMessage, group: String)
    func send(_ control: RaftControl, to member: RaftID, group: String)
    /// Where member `id` listens (from the group's replicated state).
    func setAddress(_ address: HostPort, of id: RaftID)
}

/// One member of one Raft group, for real: the shell around `Raft` that writes its log
/// (`RaftGroupStore`), sends its messages (`RaftMessageSink`), keeps its timer on an
/// event loop, applies committed entries to the workload's `WorkloadState`, and answers
/// writes, reads and watches.
///
/// Directives run in order, and nothing that depends on the log leaves before the log
/// is on disk: a `persist` is appended to the store, and every directive after it
/// waits in `queued` until one `flush` at the end of the loop's turn has synced the
/// store (one fdatasync for every event of the turn, group commit; on a thread of the
/// pool, while the loop takes the next turn's events) and then carries them out. A
/// client's answer is such a directive too.
///
/// Every method must be called on `loop` except the `async` ones, which hop onto it.
public final class RaftGroupHost: @unchecked Sendable {
    public struct Settings: Sendable {
        public var raft: Raft.Configuration
        /// A snapshot is taken when this many entries were applied since the last one.
        public var snapshotEvery: UInt64 = 10_000
        /// A write whose entry is not applied within this long gets `unknownOutcome`.
        public var writeTimeout: TimeAmount = .seconds(5)
        /// Changes kept for watches that resume from a revision.
        public var watchHistory = 1000
        /// The leader marks the ordinals of a member's node not ready when it has not
        /// heard from that member this long (its node is cut off or down), so that the
        /// workload's leadership moves to a pod the group can still reach.
        public var unreachableAfter: UInt64 = 4_000_000_000
        /// This member's node and where it listens for Raft (nil: it does not listen,
        /// and its group stays on this node). The leader records its own in the state
        /// (`WorkloadState.members`); the others give theirs when they join.
        public var advertise: WorkloadState.Member?

        public init(id: RaftID) { raft = Raft.Configuration(id: id) }
    }

    public let group: String
    public let loop: any EventLoop
    public let settings: Settings
    private var raft: Raft
    private let store: RaftGroupStore
    private let sink: any RaftMessageSink
    private var logger: Logger
    public private(set) var state: WorkloadState
    private var queued: [Raft.Directive] = []
    private var flushScheduled = false
    /// Snapshots to install and persists among `queued`: while there is one, every new
    /// directive queues behind it.
    private var queuedBarriers = 0
    /// A sync runs on the thread pool.
    private var syncing = false
    private var wake: (at: UInt64, task: Scheduled<Void>)?
    private var writes: [UInt64: PendingWrite] = [:]
    /// Writes of this turn of the loop, proposed together at its end.
    private var proposals: [(command: [UInt8], promise: EventLoopPromise<WorkloadState.Outcome>)] = []
    private var reads: [UInt64: EventLoopPromise<UInt64>] = [:]
    /// Writes and reads this member carried to the leader, by request.
    private var forwarded: [UInt64: (promise: EventLoopPromise<WorkloadState.Outcome>, timeout: Scheduled<Void>)] = [:]
    private var forwardedReads: [UInt64: Scheduled<Void>] = [:]
    private var nextRequest: UInt64 = 0
    /// When each member was last heard from, and since when this member leads.
    private var lastHeard: [RaftID: UInt64] = [:]
    private var leadingSince: UInt64?
    /// Members that asked to join or leave while this member leads, handled one at a time.
    private var changing = false
    /// While this member is not in its group yet: the members it asked to join, the only
    /// ones whose messages it takes (`RaftTransport`).
    public var joinTargets: Set<RaftID> = []
    /// The commit index each learner must hold before it is promoted (the leader's).
    private var promotionTargets: [RaftID: UInt64] = [:]
    /// The leader said this member is out of the group (it asked to leave).
    public private(set) var removed = false
    /// The leaders this member asked to remove it: an answer from one of them counts.
    public var leaveTargets: Set<RaftID> = []
    private var readyReads: [(index: UInt64, promise: EventLoopPromise<UInt64>)] = []
    private var nextRead: UInt64 = 0
    /// Reads of this turn of the loop, started together at its end.
    private var readBatch: [UInt64] = []
    private var watchers: [UInt64: Watcher] = [:]
    private var nextWatcher: UInt64 = 0
    /// The latest changes, oldest first, for watches that resume: every change from
    /// revision `historyStart` on.
    private var history: [WorkloadState.Event] = []
    private var historyStart: UInt64 = 0
    private var leaderWatchers:
        [UInt64: (changed: @Sendable (WorkloadState.Leadership) -> Void, end: @Sendable () -> Void)] =
            [:]
    /// An election of the workload's leader is proposed and not applied yet.
    private var electing = false
    private var appliedSinceSnapshot: UInt64 = 0
    /// Why the member stopped (a disk that failed): it takes no more events.
    public private(set) var failure: String?
    private let gauges: Gauges
    private var reported: [Int64] = []

    /// This member's figures on `/metrics`, labelled with the group.
    private struct Gauges {
        let term, commit, applied, lastIndex, snapshotIndex, logBytes, leader, workloadLeaderRevision: Gauge
        let syncs: Counter

        init(group: String) {
            func gauge(_ name: String) -> Gauge { Gauge(label: "beemesh_raft_\(name)", dimensions: [("group", group)]) }
            term = gauge("term")
            commit = gauge("commit_index")
            applied = gauge("applied_index")
            lastIndex = gauge("last_index")
            snapshotIndex = gauge("snapshot_index")
            logBytes = gauge("log_bytes")
            leader = gauge("is_leader")
            workloadLeaderRevision = gauge("workload_leader_revision")
            syncs = Counter(label: "beemesh_raft_log_syncs_total", dimensions: [("group", group)])
        }
    }

    private struct PendingWrite {
        var term: UInt64
        var promise: EventLoopPromise<WorkloadState.Outcome>
        var timeout: Scheduled<Void>
    }

    private struct Watcher {
        var prefix: String
        var send: @Sendable (WorkloadState.Event) -> Void
        /// The watch can go on no longer (a snapshot replaced the state it follows, or
        /// the member stopped): the watcher must read again.
        var end: @Sendable () -> Void
    }

    /// Opens the member's directory and starts it. `bootstrap` is the group's first
    /// membership (the same on every first member; empty for a member that joins later).
    public init(
        group: String,
        directory: String,
        settings: Settings,
        bootstrap: Membership,
        sink: any RaftMessageSink,
        loop: any EventLoop,
        logger: Logger
    ) throws {
        self.group = group
        self.settings = settings
        self.sink = sink
        self.loop = loop
        self.logger = logger
        self.logger[metadataKey: "group"] = "\(group)"
        gauges = Gauges(group: group)
        store = try RaftGroupStore(directory: directory)
        if store.repairedBytes > 0 {
            self.logger.warning(
                "Raft log: a torn tail was cut off",
                metadata: ["bytes": "\(store.repairedBytes)", "directory": "\(directory)"]
            )
        }
        let recovered = store.recovered
        state = try recovered.snapshot.map { try WorkloadState(snapshot: $0.data) } ?? WorkloadState()
        historyStart = (recovered.snapshot?.index ?? 0) + 1
        raft = Raft(
            configuration: settings.raft,
            storage: recovered,
            bootstrap: bootstrap,
            seed: UInt64.random(in: .min ... .max)
        )
    }

    /// Starts the member's timer and applies what it knew was committed.
    public func start() {
        loop.preconditionInEventLoop()
        for (id, member) in state.members { tellAddress(member.address, of: id) }
        carry(raft.start(now: Self.now()))
    }

    /// Stops the timer and fails whatever waits; the directory stays.
    public func stop() {
        loop.preconditionInEventLoop()
        fail("the member stopped")
    }

    static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    // MARK: events

    /// A message from another member (the transport checked who sent it).
    public func receive(_ message: RaftMessage) {
        loop.preconditionInEventLoop()
        guard failure == nil else { return }
        let now = Self.now()
        lastHeard[message.from] = now
        carry(raft.receive(message, now: now))
        promoteCaughtUpLearners()
    }

    /// A control frame from member (or, for a join, node) `from` on node `node`.
    public func receive(_ control: RaftControl, from: RaftID, node: String) {
        loop.preconditionInEventLoop()
        guard failure == nil else { return }
        switch control {
        case .join(let address, let empty):
            join(from, node: node, address: address, empty: empty)
        case .leave:
            if raft.role == .leader {
                leave(from, node: node)
            } else if leaveTargets.contains(from) {
                // The answer of a leader this member asked to remove it: it is out.
                removed = true
            }
        case .forward(let request, let command):
            guard raft.role == .leader, let decoded = try? WorkloadState.Command(decoding: command),
                Self.mayForward(decoded, from: node),
                let (index, directives) = try? raft.propose(batch: [command], now: Self.now())
            else {
                return sink.send(
                    .forwarded(request: request, accepted: false, index: 0, term: 0),
                    to: from,
                    group: group
                )
            }
            sink.send(
                .forwarded(request: request, accepted: true, index: index, term: raft.term),
                to: from,
                group: group
            )
            carry(directives)
        case .forwarded(let request, let accepted, let index, let term):
            guard let (promise, timeout) = forwarded.removeValue(forKey: request) else { return }
            timeout.cancel()
            guard accepted else { return promise.fail(RaftGroupError.notLeader(nil)) }
            // Already applied here before the answer came: which outcome is not known.
            guard index > state.revision else { return promise.fail(RaftGroupError.unknownOutcome) }
            watch(index, term: term, promise)
        case .readIndex(let request):
            guard raft.role == .leader else {
                return sink.send(.readIndexReply(request: request, accepted: false, index: 0), to: from, group: group)
            }
            linearizableRead().whenComplete { [self] result in
                let index = (try? result.get()) ?? 0
                sink.send(.readIndexReply(request: request, accepted: index > 0, index: index), to: from, group: group)
            }
        case .readIndexReply(let request, let accepted, let index):
            guard let timeout = forwardedReads.removeValue(forKey: request),
                let promise = reads.removeValue(forKey: request)
            else { return }
            timeout.cancel()
            guard accepted else { return promise.fail(RaftGroupError.notLeader(raft.leader)) }
            if state.revision >= index { return promise.succeed(index) }
            readyReads.append((index, promise))
            // Cut off before applying up to it: not answered from a state that may be behind.
            loop.scheduleTask(in: settings.writeTimeout) { [self] () -> Void in
                guard let position = readyReads.firstIndex(where: { $0.promise.futureResult === promise.futureResult })
                else { return }
                readyReads.remove(at: position).promise.fail(RaftGroupError.notLeader(nil))
            }
        }
    }

    /// Proposes a write; the outcome comes once its entry is applied here. Writes that
    /// come in one turn of the loop are proposed together at its end: one entry each,
    /// one persist and one append per follower for all of them.
    ///
    /// A member that does not lead carries the write to the leader (`RaftControl`).
    public func write(_ command: WorkloadState.Command) -> EventLoopFuture<WorkloadState.Outcome> {
        loop.preconditionInEventLoop()
        if let failure { return loop.makeFailedFuture(RaftGroupError.stopped(failure)) }
        guard raft.role == .leader else { return forward(command) }
        let promise = loop.makePromise(of: WorkloadState.Outcome.self)
        proposals.append((command.encoded(), promise))
        if proposals.count == 1 { loop.execute { [self] in proposeBatch() } }
        return promise.futureResult
    }

    private func proposeBatch() {
        let batch = proposals
        proposals = []
        guard !batch.isEmpty else { return }
        if let failure {
            for (_, promise) in batch { promise.fail(RaftGroupError.stopped(failure)) }
            return
        }
        let proposal: (first: UInt64, [Raft.Directive])
        do {
            proposal = try raft.propose(batch: batch.map(\.command), now: Self.now())
        } catch {
            for (_, promise) in batch { promise.fail(RaftGroupError(error)) }
            return
        }
        for (offset, (_, promise)) in batch.enumerated() {
            watch(proposal.first + UInt64(offset), term: raft.term, promise)
        }
        carry(proposal.1)
    }

    /// `promise` is answered when the entry at `index` is applied: with its outcome if
    /// it is still of `term`, else as lost; unknown if that takes longer than the
    /// write timeout.
    private func watch(_ index: UInt64, term: UInt64, _ promise: EventLoopPromise<WorkloadState.Outcome>) {
        let timeout = loop.scheduleTask(in: settings.writeTimeout) { [self] () -> Void in
            guard writes[index]?.promise.futureResult === promise.futureResult else { return }
            writes.removeValue(forKey: index)?.promise.fail(RaftGroupError.unknownOutcome)
        }
        // A write already waiting for this index was proposed in another term: which
        // of the two the log keeps is not known here yet (the later leader may lose
        // its entry to a leader of the earlier one's log), so the earlier is unknown.
        if let earlier = writes.updateValue(PendingWrite(term: term, promise: promise, timeout: timeout), forKey: index)
        {
            earlier.timeout.cancel()
            earlier.promise.fail(RaftGroupError.unknownOutcome)
        }
    }

    private func forward(_ command: WorkloadState.Command) -> EventLoopFuture<WorkloadState.Outcome> {
        guard let leader = raft.leader, leader != raft.id else {
            return loop.makeFailedFuture(RaftGroupError.notLeader(nil))
        }
        nextRequest += 1
        let request = nextRequest
        let promise = loop.makePromise(of: WorkloadState.Outcome.self)
        // No answer: the leader may have proposed it.
        let timeout = loop.scheduleTask(in: settings.writeTimeout) { [self] () -> Void in
            forwarded.removeValue(forKey: request)?.promise.fail(RaftGroupError.unknownOutcome)
        }
        forwarded[request] = (promise, timeout)
        sink.send(.forward(request: request, command: command.encoded()), to: leader, group: group)
        return promise.futureResult
    }

    /// A linearizable read (ReadIndex): succeeds with the revision it may be answered
    /// at once the state machine applied it; read `kv` then, on the loop.
    public func linearizableRead() -> EventLoopFuture<UInt64> {
        loop.preconditionInEventLoop()
        if let failure { return loop.makeFailedFuture(RaftGroupError.stopped(failure)) }
        nextRead += 1
        let promise = loop.makePromise(of: UInt64.self)
        reads[nextRead] = promise
        if raft.role != .leader {
            // The leader's read index, then this member's state once applied to it.
            guard let leader = raft.leader, leader != raft.id else {
                reads[nextRead] = nil
                promise.fail(RaftGroupError.notLeader(nil))
                return promise.futureResult
            }
            let request = nextRead
            forwardedReads[request] = loop.scheduleTask(in: settings.writeTimeout) { [self] () -> Void in
                forwardedReads[request] = nil
                reads.removeValue(forKey: request)?.fail(RaftGroupError.notLeader(nil))
            }
            sink.send(.readIndex(request: request), to: leader, group: group)
            return promise.futureResult
        }
        // Reads of one turn share one heartbeat round.
        readBatch.append(nextRead)
        if readBatch.count == 1 {
            loop.execute { [self] in
                let batch = readBatch
                readBatch = []
                guard failure == nil else { return }
                carry(raft.read(batch: batch, now: Self.now()))
            }
        }
        return promise.futureResult
    }

    /// Calls `send` with every change under `prefix` from now on, until `cancelWatch`;
    /// returns its ID and the changes after `revision` still in the history (to be
    /// delivered before any that `send` gets). Nil: `revision` is older than the
    /// history (compacted), and the watcher must read again and resume from there.
    public func watch(
        prefix: String,
        after revision: UInt64?,
        send: @escaping @Sendable (WorkloadState.Event) -> Void,
        end: @escaping @Sendable () -> Void
    ) -> (id: UInt64, replay: [WorkloadState.Event])? {
        loop.preconditionInEventLoop()
        var replay: [WorkloadState.Event] = []
        if let revision, revision < state.revision {
            // Revisions with no change of a key (noops, claims) are not in the history:
            // it covers `revision` if nothing of it was dropped since.
            guard revision + 1 >= historyStart else { return nil }
            replay = history.filter { $0.revision > revision && $0.key.hasPrefix(prefix) }
        }
        nextWatcher += 1
        watchers[nextWatcher] = Watcher(prefix: prefix, send: send, end: end)
        return (nextWatcher, replay)
    }

    public func cancelWatch(_ id: UInt64) {
        loop.preconditionInEventLoop()
        watchers[id] = nil
    }

    /// Calls `changed` with the workload's leadership now and at every change, and
    /// `end` if the member stops.
    public func watchLeader(
        _ changed: @escaping @Sendable (WorkloadState.Leadership) -> Void,
        end: @escaping @Sendable () -> Void
    ) -> UInt64 {
        loop.preconditionInEventLoop()
        nextWatcher += 1
        guard inTouchWithLeader(now: Self.now()) else {
            // Cut off from the group: what it knows of the workload's leader may be stale.
            end()
            return nextWatcher
        }
        leaderWatchers[nextWatcher] = (changed, end)
        changed(state.leadership)
        return nextWatcher
    }

    public func cancelLeaderWatch(_ id: UInt64) {
        loop.preconditionInEventLoop()
        leaderWatchers[id] = nil
    }

    public func changeMembership(_ change: MembershipChange) throws(RaftGroupError) {
        loop.preconditionInEventLoop()
        do {
            carry(try raft.changeMembership(change, now: Self.now()))
        } catch {
            throw RaftGroupError(error)
        }
    }

    public func transferLeadership(to target: RaftID) throws(RaftGroupError) {
        loop.preconditionInEventLoop()
        do {
            carry(try raft.transferLeadership(to: target, now: Self.now()))
        } catch {
            throw RaftGroupError(error)
        }
    }

    /// This member's view, for the agent's API (`node`: the node it runs on).
    public func status(node: String) -> RaftGroupStatus {
        loop.preconditionInEventLoop()
        let followers = raft.followers
        let name = group.split(separator: "/").last.map(String.init) ?? group
        return RaftGroupStatus(
            group: group,
            member: Self.hex(raft.id),
            node: node,
            role: raft.role.rawValue,
            term: raft.term,
            leader: raft.leader.map(Self.hex),
            commit: raft.commit,
            applied: state.revision,
            lastIndex: raft.lastIndex,
            snapshotIndex: raft.snapshotIndex,
            logBytes: store.logBytes,
            members: raft.membership.members.map { id in
                let match = id == raft.id ? raft.lastIndex : followers[id]?.match
                return RaftGroupStatus.Member(
                    id: Self.hex(id),
                    voter: raft.membership.isVoter(id),
                    match: raft.role == .leader ? match : nil,
                    lag: raft.role == .leader ? match.map { raft.lastIndex - min($0, raft.lastIndex) } : nil,
                    node: state.members[id]?.node ?? (id == raft.id ? node : nil),
                    address: state.members[id]?.address
                )
            },
            ordinals: state.claims.sorted { $0.key < $1.key }.map {
                RaftGroupStatus.Ordinal(ordinal: $0.key, node: $0.value.node, ready: $0.value.ready)
            },
            workloadLeader: state.leadership.ordinal.map { "\(name)-\($0)" },
            leaderRevision: state.leadership.revision,
            keys: state.values.count,
            failure: failure
        )
    }

    /// A member ID as the API shows it: 16 hexadecimal digits.
    public static func hex(_ id: RaftID) -> String {
        let digits = String(id, radix: 16)
        return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }

    public var isLeader: Bool { raft.role == .leader }
    /// Whether this member holds no entry and no snapshot (a joiner not caught up at all).
    public var isEmpty: Bool { raft.lastIndex == 0 && raft.snapshotIndex == 0 }
    /// The group's leader (a member), as far as this member knows.
    public var raftLeader: RaftID? { raft.leader }
    public var membership: Membership { raft.membership }

    // MARK: membership across nodes

    /// Node `node` (member `id`) asks to join, listening at `address`: the leader
    /// records where it listens, then adds it as a learner; it is promoted to a voter
    /// once it has caught up (`promoteCaughtUpLearners`). Others ignore it: the node
    /// asks every member it knows until one that leads has added it.
    ///
    /// A voter that asks with nothing in its log lost its disk: it is removed first (a
    /// voter without the committed entries could help elect a leader without them),
    /// then added again as a learner at its next request.
    private func join(_ id: RaftID, node: String, address: String, empty: Bool) {
        guard raft.leadsWithCommit, !changing, HostPort(address) != nil else { return }
        if empty, raft.membership.isVoter(id), id != raft.id {
            logger.warning("Raft member lost its log: removed, to join again", metadata: ["member": "\(Self.hex(id))"])
            try? changeMembership(.remove(id))
            return
        }
        let known = state.members[id] == WorkloadState.Member(node: node, address: address)
        guard !known || !raft.membership.contains(id) else { return }
        changing = true
        let recorded =
            known
            ? loop.makeSucceededFuture(.done(revision: 0, previous: nil))
            : write(.member(id: id, node: node, address: address))
        recorded.whenComplete { [self] result in
            changing = false
            guard case .success = result, !raft.membership.contains(id) else { return }
            do {
                try changeMembership(.addLearner(id))
                logger.info(
                    "Raft member joins as a learner",
                    metadata: ["member": "\(Self.hex(id))", "node": "\(node)"]
                )
            } catch {
                logger.debug("Raft member not added yet", metadata: ["member": "\(Self.hex(id))", "error": "\(error)"])
            }
        }
    }

    /// Node `node` (member `id`) leaves the group (it released its claims once its
    /// pods were gone): it is removed and its address forgotten. It asks again until
    /// it is out.
    private func leave(_ id: RaftID, node: String) {
        guard raft.leadsWithCommit, id != raft.id else { return }
        guard raft.membership.contains(id) else {
            // Out already (its removal was committed, or it never joined): say so.
            if state.members[id] == nil { sink.send(.leave, to: id, group: group) }
            return
        }
        do {
            try changeMembership(.remove(id))
        } catch {
            return logger.debug(
                "Raft member not removed yet",
                metadata: ["member": "\(Self.hex(id))", "error": "\(error)"]
            )
        }
        logger.info("Raft member leaves", metadata: ["member": "\(Self.hex(id))", "node": "\(node)"])
        // It asks only once its pods are gone; what it could not release goes now.
        for (ordinal, claim) in state.claims where claim.node == node {
            _ = write(.release(ordinal: ordinal, node: node))
        }
        _ = write(.member(id: id, node: node, address: ""))
    }

    /// A leader that is leaving hands its leadership to the voter it heard from last
    /// that holds its whole log (TimeoutNow); none such: it stays, and is asked again.
    public func handOverLeadership() {
        loop.preconditionInEventLoop()
        guard raft.role == .leader else { return }
        let now = Self.now()
        let target = raft.membership.voters.filter { id in
            id != raft.id && raft.followers[id]?.match == raft.lastIndex
                && now <= (lastHeard[id] ?? 0) + settings.raft.electionTimeoutMin
        }.max { (lastHeard[$0] ?? 0) < (lastHeard[$1] ?? 0) }
        guard let target else { return }
        do {
            try transferLeadership(to: target)
            logger.info("Raft leadership handed over before leaving", metadata: ["to": "\(Self.hex(target))"])
        } catch {
            logger.debug("Raft leadership not handed over yet", metadata: ["error": "\(error)"])
        }
    }

    /// Whether a member on node `node` may have the leader propose `command`: the
    /// workload's keys; claims, releases and readiness of its own node's ordinals only;
    /// never an election or a member's address (the leader writes those itself).
    public static func mayForward(_ command: WorkloadState.Command, from node: String) -> Bool {
        switch command {
        case .put, .delete: true
        case .claim(_, let named), .release(_, let named), .ready(_, let named, _): named == node
        case .elect, .member: false
        }
    }

    /// The leader records where it listens, so that members that lead after it reach it.
    private func recordOwnAddressIfDue() {
        guard !changing, raft.leadsWithCommit, let own = settings.advertise, state.members[raft.id] != own else {
            return
        }
        changing = true
        write(.member(id: raft.id, node: own.node, address: own.address)).whenComplete { [self] _ in changing = false }
    }

    /// The leader promotes a learner that has caught up (one change at a time): it holds
    /// every committed entry, and lags by at most `promotionLag`.
    private func promoteCaughtUpLearners() {
        guard raft.leadsWithCommit else { return }
        // Each learner's target: the commit index when it was first looked at (under
        // steady writes, the commit moves on as fast as the learner does).
        for learner in raft.membership.learners where promotionTargets[learner] == nil {
            promotionTargets[learner] = raft.commit
        }
        promotionTargets = promotionTargets.filter { raft.membership.learners.contains($0.key) }
        guard
            let learner = raft.membership.learners.first(where: { learner in
                raft.followers[learner].map {
                    $0.match >= promotionTargets[learner]!
                        && $0.match + raft.configuration.promotionLag >= raft.lastIndex
                } ?? false
            })
        else { return }
        do {
            try changeMembership(.promote(learner))
            logger.info("Raft learner promoted to voter", metadata: ["member": "\(Self.hex(learner))"])
        } catch {
            // Another change is not committed yet: tried again at the next reply.
        }
    }

    /// The leader marks not ready the ordinals of nodes whose members it has not heard
    /// from within `unreachableAfter` (their agents report them ready again once back).
    private func markUnreachable(now: UInt64) {
        guard raft.leadsWithCommit, let since = leadingSince else { return }
        let nodes = Dictionary(state.members.map { ($0.value.node, $0.key) }, uniquingKeysWith: { first, _ in first })
        for (ordinal, claim) in state.claims where claim.ready {
            guard let id = nodes[claim.node], id != raft.id, raft.membership.contains(id) else { continue }
            let heard = max(lastHeard[id] ?? 0, since)
            guard now > heard + settings.unreachableAfter else { continue }
            logger.warning(
                "Raft member unreachable: its node's ordinal is marked not ready",
                metadata: ["member": "\(Self.hex(id))", "node": "\(claim.node)", "ordinal": "\(ordinal)"]
            )
            _ = write(.ready(ordinal: ordinal, node: claim.node, ready: false))
        }
    }

    /// Whether this member leads, or heard from its leader within the longest election
    /// timeout: the lease within which what it says of the workload's leader holds. A
    /// member cut off longer ends its leader watches (their pods must ask again, and a
    /// read is refused until the group is reached), before the group's side of the cut
    /// marks its pods not ready (`unreachableAfter`, at least twice as long) and
    /// elects another.
    private func inTouchWithLeader(now: UInt64) -> Bool {
        if raft.role == .leader { return true }
        guard let leader = raft.leader, let heard = lastHeard[leader] else {
            return raft.membership.voters == [raft.id]
        }
        return now <= heard + settings.raft.electionTimeoutMax
    }

    private func endLeaderWatchesIfCutOff(now: UInt64) {
        guard !leaderWatchers.isEmpty, !inTouchWithLeader(now: now) else { return }
        logger.warning("cut off from the group's leader: the workload's leader watches end")
        for watcher in leaderWatchers.values { watcher.end() }
        leaderWatchers = [:]
    }

    private func tellAddress(_ address: String, of id: RaftID) {
        guard id != raft.id, let parsed = HostPort(address) else { return }
        sink.setAddress(parsed, of: id)
    }

    // MARK: the shell

    private func carry(_ directives: [Raft.Directive]) {
        for directive in directives {
            guard failure == nil else { return }
            if queuedBarriers > 0 {
                // A snapshot to install, or a persist behind one, waits: what follows
                // it (persists too) goes to the store only after it, in order.
                queue(directive)
            } else if case .persist(let hardState, let entries) = directive {
                store.append(hardState, entries: entries)
                scheduleFlush()
            } else if store.hasPendingWrites || !queued.isEmpty || syncing {
                queue(directive)
            } else {
                perform(directive)
            }
        }
        takeSnapshotIfDue()
        electIfDue()
        recordOwnAddressIfDue()
        if queued.isEmpty { report() }
    }

    private func queue(_ directive: Raft.Directive) {
        switch directive {
        case .installSnapshot, .persist: queuedBarriers += 1
        default: break
        }
        queued.append(directive)
    }

    /// The group's leader elects the workload's leader when the current one is not
    /// ready (or there is none): one election in flight at a time, each a swap on the
    /// leadership's revision.
    private func electIfDue() {
        guard !electing, failure == nil, raft.leadsWithCommit, let due = state.electionDue else {
            return
        }
        electing = true
        write(.elect(ordinal: due, ifRevision: state.leadership.revision)).whenComplete { [self] result in
            electing = false
            switch result {
            case .success:
                electIfDue()
            case .failure(let error):
                // Tried again at the next event (a heartbeat at the latest), not at once.
                logger.debug("workload leader election not applied", metadata: ["error": "\(error)"])
            }
        }
    }

    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        loop.execute { [self] in flush() }
    }

    /// The end of the loop's turn: one sync for every persist since the last, on a
    /// thread of the pool while the loop goes on taking events (whose persists wait for
    /// the next sync), or here when it holds one entry or none; then what waited for it. Directives queued while a sync ran wait
    /// for the next one: they may depend on what that sync covers.
    private func flush() {
        flushScheduled = false
        guard failure == nil, !syncing else { return }
        // One entry or none (a client at a time, a vote): the hop to another thread
        // and back costs more than the loop would gain; synced here.
        if store.pendingEntryCount <= 1 {
            do {
                try store.sync()
            } catch {
                logger.critical("Raft log: the disk failed; the member stops", metadata: ["error": "\(error)"])
                fail("the log could not be written: \(error)")
                return
            }
            gauges.syncs.increment()
            release(queued.count)
            return
        }
        guard let write = store.takePending() else {
            // Nothing new to write: what waits depended on syncs that are done.
            release(queued.count)
            return
        }
        let covered = queued.count
        syncing = true
        NIOThreadPool.singleton.runIfActive(eventLoop: loop) { try write.perform() }.whenComplete { [self] result in
            syncing = false
            if case .failure(let error) = result {
                logger.critical("Raft log: the disk failed; the member stops", metadata: ["error": "\(error)"])
                fail("the log could not be written: \(error)")
                return
            }
            gauges.syncs.increment()
            release(covered)
            if store.hasPendingWrites || !queued.isEmpty { scheduleFlush() }
        }
    }

    /// Carries out the first `count` directives that waited for a sync.
    private func release(_ count: Int) {
        // A member that failed meanwhile dropped what waited.
        let count = min(count, queued.count)
        let waiting = Array(queued.prefix(count))
        queued.removeFirst(count)
        for (position, directive) in waiting.enumerated() {
            guard failure == nil else { break }
            switch directive {
            case .persist(let hardState, let entries):
                // A persist that waited behind a snapshot: to the store now, and what
                // follows it waits for its sync.
                queuedBarriers -= 1
                store.append(hardState, entries: entries)
                queued.insert(contentsOf: waiting[(position + 1)...], at: 0)
                scheduleFlush()
                takeSnapshotIfDue()
                return
            case .installSnapshot:
                queuedBarriers -= 1
                perform(directive)
            default:
                perform(directive)
            }
        }
        takeSnapshotIfDue()
        electIfDue()
        recordOwnAddressIfDue()
        report()
    }

    /// The gauges, when a figure changed.
    private func report() {
        let figures = [
            raft.term, raft.commit, state.revision, raft.lastIndex, raft.snapshotIndex, UInt64(store.logBytes),
            raft.role == .leader ? 1 : 0, state.leadership.revision,
        ].map { Int64(clamping: $0) }
        guard figures != reported else { return }
        reported = figures
        for (gauge, value) in zip(
            [
                gauges.term, gauges.commit, gauges.applied, gauges.lastIndex, gauges.snapshotIndex, gauges.logBytes,
                gauges.leader, gauges.workloadLeaderRevision,
            ],
            figures
        ) { gauge.record(value) }
    }

    private func perform(_ directive: Raft.Directive) {
        switch directive {
        case .persist:
            preconditionFailure("a queued persist goes to the store in release")
        case .send(let message):
            sink.send(message, group: group)
        case .apply(let entries):
            let leadership = state.leadership
            for entry in entries { apply(entry) }
            answerReads()
            if state.leadership != leadership {
                logger.info(
                    "workload leader",
                    metadata: [
                        "ordinal": "\(state.leadership.ordinal.map(String.init) ?? "none")",
                        "revision": "\(state.leadership.revision)",
                    ]
                )
                for watcher in leaderWatchers.values { watcher.changed(state.leadership) }
            }
        case .installSnapshot(let snapshot):
            install(snapshot)
        case .readReady(let id, let index):
            guard let promise = reads.removeValue(forKey: id) else { return }
            if state.revision >= index {
                promise.succeed(index)
            } else {
                readyReads.append((index, promise))
            }
        case .readFailed(let id, let leader):
            reads.removeValue(forKey: id)?.fail(RaftGroupError.notLeader(leader))
        case .leaderChanged(let leader, let term):
            leadingSince = leader == raft.id ? Self.now() : nil
            logger.info(
                "Raft leader",
                metadata: ["leader": "\(leader.map { String($0, radix: 16) } ?? "none")", "term": "\(term)"]
            )
        case .wake(let at):
            guard wake?.at != at else { return }
            wake?.task.cancel()
            let task = loop.scheduleTask(deadline: .uptimeNanoseconds(at)) { [self] in
                wake = nil
                guard failure == nil else { return }
                let now = Self.now()
                carry(raft.tick(now: now))
                markUnreachable(now: now)
                endLeaderWatchesIfCutOff(now: now)
            }
            wake = (at, task)
        }
    }

    private func apply(_ entry: LogEntry) {
        guard entry.index > state.revision else { return }
        appliedSinceSnapshot += 1
        let pending = writes.removeValue(forKey: entry.index)
        pending?.timeout.cancel()
        guard case .command(let bytes) = entry.kind else {
            state.skip(to: entry.index)
            pending?.promise.fail(RaftGroupError.lost)
            return
        }
        guard let command = try? WorkloadState.Command(decoding: bytes) else {
            // Only members write commands, and they encode them: a bug, not input.
            logger.error("Raft log: an entry that is not a command", metadata: ["index": "\(entry.index)"])
            state.skip(to: entry.index)
            pending?.promise.fail(RaftGroupError.lost)
            return
        }
        let (outcome, event) = state.apply(command, at: entry.index)
        if case .member(let id, _, let address) = command { tellAddress(address, of: id) }
        if let pending {
            if pending.term == entry.term {
                pending.promise.succeed(outcome)
            } else {
                pending.promise.fail(RaftGroupError.lost)
            }
        }
        if let event { publish(event) }
    }

    private func publish(_ event: WorkloadState.Event) {
        history.append(event)
        if history.count > settings.watchHistory {
            let dropped = history.count - settings.watchHistory
            historyStart = history[dropped - 1].revision + 1
            history.removeFirst(dropped)
        }
        for watcher in watchers.values where event.key.hasPrefix(watcher.prefix) { watcher.send(event) }
    }

    private func answerReads() {
        guard !readyReads.isEmpty else { return }
        let revision = state.revision
        readyReads.removeAll { ready in
            guard ready.index <= revision else { return false }
            ready.promise.succeed(ready.index)
            return true
        }
    }

    private func install(_ snapshot: Snapshot) {
        // A later snapshot replaced this one in Raft already (two waited together): it
        // is installed when its own directive comes.
        guard snapshot.index >= raft.snapshotIndex else { return }
        do {
            // Entries appended after the snapshot arrived (later events of this turn,
            // already synced and maybe acknowledged) stay: the log is rewritten with
            // what Raft holds now after the snapshot, not with nothing.
            try store.save(snapshot, keeping: entries(after: snapshot.index))
            state = try WorkloadState(snapshot: snapshot.data)
        } catch {
            logger.critical(
                "Raft: a snapshot could not be installed; the member stops",
                metadata: ["error": "\(error)"]
            )
            fail("a snapshot could not be installed: \(error)")
            return
        }
        appliedSinceSnapshot = 0
        // Writes whose entries the snapshot covers: whether they happened is unknown here.
        for index in writes.keys where index <= snapshot.index {
            writes.removeValue(forKey: index)?.promise.fail(RaftGroupError.unknownOutcome)
        }
        history = []
        historyStart = snapshot.index + 1
        // Changes before the snapshot were never seen here: watches end, and resume
        // from what their clients read.
        for watcher in watchers.values { watcher.end() }
        watchers = [:]
        answerReads()
    }

    private func takeSnapshotIfDue() {
        // Under load there are always writes pending or queued: a snapshot does not
        // wait for a quiet moment (`save` syncs what is pending first, and rewrites
        // the log with every entry Raft holds after the snapshot), only for no sync to
        // be under way on the pool.
        guard failure == nil, appliedSinceSnapshot >= settings.snapshotEvery, !syncing,
            let snapshot = raft.snapshotTaken(index: state.revision, data: state.snapshot())
        else { return }
        appliedSinceSnapshot = 0
        do {
            try store.save(snapshot, keeping: entries(after: snapshot.index))
        } catch {
            logger.critical("Raft: a snapshot could not be saved; the member stops", metadata: ["error": "\(error)"])
            fail("a snapshot could not be saved: \(error)")
        }
    }

    /// What Raft's log holds after `index`.
    private func entries(after index: UInt64) -> [LogEntry] {
        guard raft.lastIndex > index else { return [] }
        return (index + 1...raft.lastIndex).compactMap { raft.entry(at: $0) }
    }

    private func fail(_ reason: String) {
        failure = failure ?? reason
        wake?.task.cancel()
        wake = nil
        queued = []
        queuedBarriers = 0
        // Writes already in the log may be applied after a restart: their outcome is
        // unknown. Those not proposed yet are known not to have happened.
        for (_, pending) in writes {
            pending.timeout.cancel()
            pending.promise.fail(RaftGroupError.unknownOutcome)
        }
        writes = [:]
        for watcher in watchers.values { watcher.end() }
        watchers = [:]
        for watcher in leaderWatchers.values { watcher.end() }
        leaderWatchers = [:]
        for (_, promise) in reads { promise.fail(RaftGroupError.stopped(reason)) }
        reads = [:]
        for timeout in forwardedReads.values { timeout.cancel() }
        forwardedReads = [:]
        for (promise, timeout) in forwarded.values {
            timeout.cancel()
            promise.fail(RaftGroupError.unknownOutcome)
        }
        forwarded = [:]
        for (_, promise) in proposals { promise.fail(RaftGroupError.stopped(reason)) }
        proposals = []
        for ready in readyReads { ready.promise.fail(RaftGroupError.stopped(reason)) }
        readyReads = []
    }
}

/// Why a write or read was not answered with a result.
public enum RaftGroupError: Error, Equatable, Sendable, CustomStringConvertible {
    /// This member does not lead; `leader` does, if known.
    case notLeader(RaftID?)
    /// Refused before it reached the log (a transfer or a membership change under way,
    /// a member that is not caught up, ...).
    case refused(String)
    /// Known not to have happened: another entry took its place in the log.
    case lost
    /// It may or may not have happened (it was not applied here in time).
    case unknownOutcome
    /// The member stopped (its disk failed, or the group was removed).
    case stopped(String)

    init(_ refusal: Raft.Refusal) {
        switch refusal {
        case .notLeader(let leader): self = .notLeader(leader)
        case .transferring: self = .refused("a leadership transfer is under way")
        case .membershipChangePending: self = .refused("another membership change is not committed yet")
        case .notCaughtUp: self = .refused("the member has not caught up with the leader")
        case .noSuchMember: self = .refused("no such member")
        case .alreadyMember: self = .refused("already a member")
        }
    }

    public var description: String {
        switch self {
        case .notLeader(let leader): "not the leader (leader: \(leader.map { String($0, radix: 16) } ?? "unknown"))"
        case .refused(let reason): "refused: \(reason)"
        case .lost: "not done: another entry took its place in the log"
        case .unknownOutcome: "the outcome is unknown: it was not applied in time"
        case .stopped(let reason): "the member stopped: \(reason)"
        }
    }
}
