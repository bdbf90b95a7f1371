import Foundation
import MeshAPI
import MeshIdentity
import MeshTestSupport
import RaftSimulation
import Testing

/// A StatefulSet's Raft group across three nodes of `tools/lab`: the counter
/// (deploy/manifests/counter.yaml, 3 replicas) applied on each node forms one group
/// of the three agents (the later ones find the first through the DHT and join it),
/// one ordinal on each node. A client writes and reads continuously through a pod's
/// workload socket on a node that does not lead; the leading node is cut off the LAN:
/// a new group leader, the workload's leadership moved off the cut node, writes
/// acknowledged again, no acknowledged write lost and the whole history linearizable
/// (the simulator's checker); healed, the node rejoins and its ordinal is ready again.
/// Needs root and podman (`tools/setup`).
extension LabEndToEndTests {
    /// What the lab showed, asserted in the test's own task.
    struct RaftObserved: Sendable {
        var formed: RaftGroupStatus?
        var cutNode = ""
        var clientNode = ""
        /// Seconds after the cut.
        var newLeader = Double.infinity
        var workloadLeaderMoved = Double.infinity
        var writesAgain = Double.infinity
        var rejoined = Double.infinity
        /// What `leader.counter.default.mesh:8080` answered from the client's pod
        /// before the cut, and how long after it the new leader answered it.
        var leaderNameBefore = ""
        var expectedBefore = ""
        var leaderNameMoved = Double.infinity
        var afterHeal: RaftGroupStatus?
        var history: [KVOperation] = []
    }

    @Test func aStatefulSetsGroupSpansThreeNodesAndSurvivesItsLeadersNodeCut() async throws {
        let observed = try await blocking { try Self.runRaftLab(name: "r\(getpid() % 1_000_000)") }
        let formed = try #require(observed.formed, "the group formed")
        #expect(formed.members.count == 3 && formed.members.allSatisfy(\.voter), "\(formed.members)")
        #expect(
            Set(formed.ordinals.map(\.node)) == ["node-1", "node-2", "node-3"],
            "one ordinal on each node: \(formed.ordinals)"
        )
        #expect(observed.cutNode != observed.clientNode)
        let acknowledged = observed.history.filter { $0.outcome == .done }.count
        let verdict = LinearizabilityChecker.check(observed.history)
        print(
            "LabRaftTests: \(observed.history.count) operations, \(acknowledged) writes acknowledged; after "
                + "\(observed.cutNode) (the group leader's node) was cut: "
                + String(
                    format: "a new group leader after %.2f s, the workload's leader moved after %.2f s, ",
                    observed.newLeader,
                    observed.workloadLeaderMoved
                )
                + String(
                    format: "writes acknowledged again after %.2f s, leader.counter.default.mesh answered by the "
                        + "new leader after %.2f s; rejoined %.2f s after the heal",
                    observed.writesAgain,
                    observed.leaderNameMoved,
                    observed.rejoined
                )
        )
        #expect(verdict.linearizable, "not linearizable at key \(verdict.key ?? "?")")
        #expect(acknowledged > 50, "only \(acknowledged) writes acknowledged")
        // Two maximum election timeouts (2 s each), and the unreachable member's
        // ordinal marked not ready two after the new leader's election.
        #expect(observed.newLeader < 4, "a new group leader \(observed.newLeader) s after the cut")
        #expect(
            observed.workloadLeaderMoved < 10,
            "the workload's leader moved \(observed.workloadLeaderMoved) s after"
        )
        #expect(observed.writesAgain < 4, "writes acknowledged again \(observed.writesAgain) s after the cut")
        #expect(observed.rejoined < 15, "the cut node rejoined \(observed.rejoined) s after the heal")
        #expect(
            observed.leaderNameBefore.hasPrefix("\(observed.expectedBefore) answered"),
            "leader.counter.default.mesh reached the leading pod \(observed.expectedBefore): \(observed.leaderNameBefore)"
        )
        // The workload's leader moved (above), then its sidecar publishes the leader
        // record; the cut one's lives out its 6 s, and a lookup waits out the cut
        // node's DHT timeouts.
        #expect(observed.leaderNameMoved < 30, "leader.counter moved \(observed.leaderNameMoved) s after the cut")
        let healed = try #require(observed.afterHeal)
        #expect(healed.ordinals.count == 3 && healed.ordinals.allSatisfy(\.ready), "\(healed.ordinals)")
    }

    private static func raftStatus(lab name: String, node: Int) -> RaftGroupStatus? {
        try? AdminClient(endpoint: .unix(path: "/run/beemesh-lab/\(name)/nodes/\(node)/agent.sock"), timeout: 2)
            .get("/v1/raft?namespace=default&name=counter", as: [RaftGroupStatus].self).first
    }

    private static func runRaftLab(name: String) throws -> RaftObserved {
        var observed = RaftObserved()
        _ = try? lab(name, ["down"], timeout: 120)  // what a killed earlier run left
        defer { _ = try? lab(name, ["down"], timeout: 120) }
        try lab(name, ["up", "3"], timeout: 300)
        // The first node starts the group; the others find it in the DHT and join. The
        // counter's pods admit one another on 8080 (leader.counter.default.mesh).
        for node in 1...3 {
            try FileManager.default.copyItem(
                atPath: root + "/deploy/policies/counter-allow.yaml",
                toPath: "/var/lib/beemesh-lab/\(name)/nodes/\(node)/policies/counter-allow.yaml"
            )
            try lab(
                name,
                ["exec", "\(node)", "beectl", "apply", "-f", root + "/deploy/manifests/counter.yaml"],
                timeout: 60
            )
            if node == 1 {
                try waitUntil("node 1's group", timeout: 60) { raftStatus(lab: name, node: 1) != nil }
            }
        }
        try waitUntil("three voters, an ordinal ready on each node, a workload leader", timeout: 180) {
            let status = raftStatus(lab: name, node: 1)
            observed.formed = status
            return status?.members.count == 3 && status?.members.allSatisfy(\.voter) == true
                && status?.ordinals.filter(\.ready).count == 3 && status?.workloadLeader != nil
        }
        let formed = try #require(observed.formed)
        let leaderNode = try #require(formed.members.first { $0.id == formed.leader }?.node)
        observed.cutNode = leaderNode
        // The client: the workload socket of a pod on another node.
        let client = try #require(formed.ordinals.first { $0.node != leaderNode })
        observed.clientNode = client.node
        let clientIndex = Int(client.node.dropFirst("node-".count))!
        let cutIndex = Int(leaderNode.dropFirst("node-".count))!
        let directory = Array(Digest.sha256(Array("counter-\(client.ordinal).default".utf8)).prefix(8))
            .map { String(format: "%02x", $0) }.joined()
        let writer = WorkloadClient(
            socket: "/run/beemesh-lab/\(name)/nodes/\(clientIndex)/pods/\(directory)/agent/workload.sock"
        )
        let thread = Thread { writer.run() }
        thread.start()
        defer {
            writer.stop()
            while thread.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
        }
        try waitUntil("the client's writes are acknowledged", timeout: 20) { writer.lastAcknowledged > 0 }
        // The leading pod, by its mesh name, from the client's pod.
        let hello = [
            "exec", "\(clientIndex)", "podman", "exec", "counter-\(client.ordinal).default.web",
            "curl", "-sS", "-m", "2", "http://leader.counter.default.mesh:8080/cgi-bin/hello",
        ]
        observed.expectedBefore = formed.workloadLeader ?? "?"
        try waitUntil("leader.counter.default.mesh answers", timeout: 30) {
            observed.leaderNameBefore = (try? lab(name, hello, timeout: 10)) ?? ""
            return observed.leaderNameBefore.contains("answered")
        }
        Thread.sleep(forTimeInterval: 1)

        try lab(name, ["cut", "\(cutIndex)"], timeout: 30)
        let cut = Date()
        var next: RaftGroupStatus?
        try waitUntil("a new group leader", timeout: 20) {
            next = raftStatus(lab: name, node: clientIndex)
            return next?.leader != nil && next?.leader != formed.leader
        }
        observed.newLeader = Date().timeIntervalSince(cut)
        try waitUntil("the workload's leader on a node that was not cut", timeout: 30) {
            next = raftStatus(lab: name, node: clientIndex)
            let leading = next?.ordinals.first { "counter-\($0.ordinal)" == next?.workloadLeader }
            return leading != nil && leading?.node != leaderNode
        }
        observed.workloadLeaderMoved = Date().timeIntervalSince(cut)
        try waitUntil("a write acknowledged after the cut", timeout: 30) {
            writer.lastAcknowledged > cut.timeIntervalSince1970
        }
        observed.writesAgain = writer.firstAcknowledged(after: cut.timeIntervalSince1970) - cut.timeIntervalSince1970
        let newLeader = next?.workloadLeader ?? "?"
        try waitUntil("leader.counter.default.mesh answered by \(newLeader)", timeout: 60) {
            ((try? lab(name, hello, timeout: 10)) ?? "").hasPrefix("\(newLeader) answered")
        }
        observed.leaderNameMoved = Date().timeIntervalSince(cut)

        try lab(name, ["heal", "\(cutIndex)"], timeout: 30)
        let healed = Date()
        try waitUntil("the cut node follows the group's leader again", timeout: 60) {
            let leader = raftStatus(lab: name, node: clientIndex)?.leader
            return leader != nil && raftStatus(lab: name, node: cutIndex)?.leader == leader
        }
        observed.rejoined = Date().timeIntervalSince(healed)
        try waitUntil("every ordinal ready again", timeout: 60) {
            observed.afterHeal = raftStatus(lab: name, node: clientIndex)
            return observed.afterHeal?.ordinals.filter(\.ready).count == 3
        }
        writer.stop()
        while thread.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
        observed.history = writer.finalHistory()
        return observed
    }
}
