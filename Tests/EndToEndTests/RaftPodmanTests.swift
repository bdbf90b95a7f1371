import Foundation
import MeshAPI
import MeshIdentity
import MeshTestSupport
import NIOConcurrencyHelpers
import RaftSimulation
import Testing

/// A StatefulSet's Raft group on real podman: the counter (deploy/manifests/counter.yaml,
/// 3 replicas) counts through its pods' workload API while a client writes and reads
/// continuously through a pod's workload socket. The leading pod is killed, then the
/// agent (SIGKILL) and started again: a new workload leader within the bound, no
/// acknowledged write lost, the whole history linearizable by the simulator's checker;
/// deleting the StatefulSet removes its group and data. Needs root and podman.
extension PodmanEndToEndTests {
    static let counterPods = (0..<3).map { "counter-\($0).default" }

    @Test func aStatefulSetsGroupKeepsItsStoreAndLeaderThroughAKilledPodAndAKilledAgent() async throws {
        try await blocking { try raftScenario() }
    }

    private func raftScenario() throws {
        guard let lock = Self.lock() else { return }
        defer { close(lock) }
        for pod in Self.counterPods { _ = try? runProcess(["podman", "pod", "rm", "-f", pod], input: [], timeout: 60) }
        let node = Node()
        try prepare(node)
        defer { cleanUp(node, pods: Self.counterPods) }
        try startAgent(node, log: "agent-1.log")
        do {
            try counter(node)
        } catch {
            Issue.record("\(error)\n\(diagnostics(node))")
        }
    }

    private func raftStatus(_ node: Node) throws -> RaftGroupStatus? {
        try AdminClient(endpoint: .unix(path: node.socket), timeout: 2)
            .get("/v1/raft?namespace=default&name=counter", as: [RaftGroupStatus].self).first
    }

    private func counter(_ node: Node) throws {
        let manifest = Self.root + "/deploy/manifests/counter.yaml"
        try NamespaceLab.run([beectl, "apply", "-f", manifest, "--agent", node.socket])
        try waitUntil("3 ordinals ready and a workload leader", timeout: 120) {
            let status = try raftStatus(node)
            return status?.ordinals.filter(\.ready).count == 3 && status?.workloadLeader != nil
        }
        let before = try #require(try raftStatus(node))
        #expect(
            before.role == "leader" && before.members.count == 1 && before.ordinals.allSatisfy { $0.node == "node-1" }
        )

        // The client: counter-1's workload socket, as its sidecar reaches it (root may too).
        let directory = Array(Digest.sha256(Array("counter-1.default".utf8)).prefix(8))
            .map { String(format: "%02x", $0) }.joined()
        let socket = "\(node.runDirectory)/pods/\(directory)/agent/workload.sock"
        let client = WorkloadClient(socket: socket)
        let thread = Thread { client.run() }
        thread.start()
        Thread.sleep(forTimeInterval: 2)

        // The leading pod is killed once it has counted: the group elects another
        // ready ordinal, which counts on from where the killed one left.
        try waitUntil("the leader counts", timeout: 15) {
            Int(
                String(
                    decoding: try AdminClient(endpoint: .unix(path: socket)).get("/v1/kv/count?raw").body,
                    as: UTF8.self
                )
            ) != nil
        }
        let killed = try #require(try raftStatus(node)?.workloadLeader)
        let killedAt = Date()
        try NamespaceLab.run(["podman", "pod", "kill", "\(killed).default"], timeout: 30)
        var next: RaftGroupStatus?
        try waitUntil("another pod leads", timeout: 15) {
            next = try raftStatus(node)
            return next?.workloadLeader != nil && next?.workloadLeader != killed
        }
        let podFailover = Date().timeIntervalSince(killedAt)
        #expect(next!.leaderRevision > before.leaderRevision, "the fencing token grew")

        // The agent dies (SIGKILL) and comes back from its disk; the pods ran on.
        Thread.sleep(forTimeInterval: 1)
        node.stopAgent(signal: SIGKILL)
        let down = Date()
        Thread.sleep(forTimeInterval: 1)
        try startAgent(node, log: "agent-2.log")
        let restarted = try #require(try raftStatus(node))
        #expect(restarted.role == "leader", "the only member leads as it starts")
        try waitUntil("a write is acknowledged again", timeout: 15) {
            client.lastAcknowledged > down.timeIntervalSince1970 + 1
        }
        let agentFailover = client.firstAcknowledged(after: down.timeIntervalSince1970 + 1) - down.timeIntervalSince1970
        Thread.sleep(forTimeInterval: 3)
        client.stop()
        while thread.isExecuting { Thread.sleep(forTimeInterval: 0.01) }

        let history = client.finalHistory()
        let verdict = LinearizabilityChecker.check(history)
        let acknowledged = history.filter { $0.outcome == .done }.count
        print(
            "RaftPodmanTests: \(history.count) operations, \(acknowledged) writes acknowledged; "
                + String(format: "a new workload leader %.2f s after its pod was killed; ", podFailover)
                + String(
                    format: "writes acknowledged again %.2f s after the agent was killed (1 s down)",
                    agentFailover
                )
        )
        #expect(verdict.linearizable, "not linearizable at key \(verdict.key ?? "?")")
        #expect(acknowledged > 100, "only \(acknowledged) writes acknowledged")
        #expect(podFailover < 5, "a new workload leader \(podFailover) s after the kill")

        // The counter counted on through the kills: the new leader's first count
        // follows the killed one's last (the store kept it), and later ones follow.
        let successor = try #require(next?.workloadLeader)
        let logs = try NamespaceLab.run([beectl, "logs", successor, "--agent", node.socket])
        let counts = logs.split(separator: "\n").compactMap { line in
            line.range(of: "leads: count ").flatMap { Int(line[$0.upperBound...]) }
        }
        #expect(counts.count >= 2 && (counts.first ?? 0) >= 2, "\(successor) counted \(counts): \(logs)")
        #expect(
            counts == Array((counts.first ?? 0)..<(counts.first ?? 0) + counts.count),
            "no count skipped or repeated: \(counts)"
        )

        // Deleted: the pods go, and the group with its data.
        try NamespaceLab.run([beectl, "delete", "-f", manifest, "--agent", node.socket])
        try waitUntil("the group is gone", timeout: 60) { try raftStatus(node) == nil }
        #expect(!FileManager.default.fileExists(atPath: node.directory.path + "/state/raft/default/counter"))
    }
}

/// Writes unique values and reads two keys through one pod's workload socket, as fast
/// as answers come, recording each operation as the checker wants it: a write that
/// got no answer is unknown; one refused before the log (503), or never sent (the
/// socket did not connect), failed.
final class WorkloadClient: @unchecked Sendable {
    private let socket: String
    /// Its number in the history; its values are its own (`c<client>-v<n>`).
    private let number: Int
    private let state = NIOLockedValueBox((history: [KVOperation](), stopped: false, acknowledged: [Double]()))

    init(socket: String, client: Int = 0) {
        self.socket = socket
        self.number = client
    }

    static func now() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1e9) }

    func run() {
        var random = SplitMix64(seed: 20 &+ UInt64(number))
        var counter = 0
        while !state.withLockedValue({ $0.stopped }) {
            let client = AdminClient(endpoint: .unix(path: socket), timeout: 2)
            let key = "k\(random.next() % 2)"
            let called = Self.now()
            if random.next() % 3 == 0 {
                guard let (status, body) = try? client.get("/v1/kv/\(key)?raw"), status == 200 || status == 404 else {
                    Thread.sleep(forTimeInterval: 0.02)
                    continue
                }
                let value = status == 200 ? String(decoding: body, as: UTF8.self) : nil
                record(
                    KVOperation(
                        client: number,
                        key: key,
                        kind: .get,
                        outcome: .value(value),
                        called: called,
                        returned: Self.now()
                    )
                )
            } else {
                counter += 1
                let value = "c\(number)-v\(counter)"
                let outcome: KVOperation.Outcome
                do {
                    let answer = try client.send("PUT", "/v1/kv/\(key)", body: Array(value.utf8))
                    outcome = answer.status == 200 ? .done : answer.status == 503 ? .failed : .unknown
                } catch {
                    // Not connected (the agent is down): nothing was sent.
                    outcome = error.reason.contains("cannot reach") ? .failed : .unknown
                }
                record(
                    KVOperation(
                        client: number,
                        key: key,
                        kind: .put(value),
                        outcome: outcome,
                        called: called,
                        returned: Self.now()
                    )
                )
                if outcome != .done { Thread.sleep(forTimeInterval: 0.1) }
            }
        }
    }

    private func record(_ operation: KVOperation) {
        state.withLockedValue { state in
            state.history.append(operation)
            if operation.outcome == .done { state.acknowledged.append(Double(operation.returned) / 1e9) }
        }
    }

    func stop() { state.withLockedValue { $0.stopped = true } }

    var lastAcknowledged: Double { state.withLockedValue { $0.acknowledged.last ?? 0 } }

    func firstAcknowledged(after time: Double) -> Double {
        state.withLockedValue { $0.acknowledged.first { $0 > time } ?? .infinity }
    }

    /// The history, then a final read of each key: what every acknowledged write left.
    func finalHistory() -> [KVOperation] {
        var history = state.withLockedValue { $0.history }
        let client = AdminClient(endpoint: .unix(path: socket), timeout: 5)
        for key in ["k0", "k1"] {
            let called = Self.now()
            if let (status, body) = try? client.get("/v1/kv/\(key)?raw"), status == 200 || status == 404 {
                let value = status == 200 ? String(decoding: body, as: UTF8.self) : nil
                history.append(
                    KVOperation(
                        client: 100 + number,
                        key: key,
                        kind: .get,
                        outcome: .value(value),
                        called: called,
                        returned: Self.now()
                    )
                )
            }
        }
        return history
    }
}
