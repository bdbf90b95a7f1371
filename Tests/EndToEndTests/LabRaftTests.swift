import Foundation
import Kademlia
import MeshAPI
import MeshIdentity
import MeshTestSupport
import NIOConcurrencyHelpers
import RaftSimulation
import Testing

/// A StatefulSet's Raft group across three nodes of `tools/lab`: the counter
/// (deploy/manifests/counter.yaml, 3 replicas) applied on the three nodes at once
/// forms one group of the three agents (the node of lowest ID starts it, the others
/// find it through the DHT and join it), one ordinal on each node, and no ordinal ever
/// runs on two nodes (sampled throughout). Two clients write and read continuously
/// through the workload sockets of pods on the nodes that do not lead; the leading
/// node is cut off the LAN:
/// a new group leader, the workload's leadership moved off the cut node, writes
/// acknowledged again, no acknowledged write lost and the whole history linearizable
/// (the simulator's checker); healed, the node rejoins and its ordinal is ready again.
/// Needs root and podman (`tools/setup`).
extension LabEndToEndTests {
    /// What the lab showed, asserted in the test's own task.
    struct RaftObserved: Sendable {
        var formed: RaftGroupStatus?
        /// What each node's `beectl apply` said (applied at once on the three).
        var applies: [String] = []
        var cutNode = ""
        var workloadLeaderNode: String?
        /// Samples of where the pods ran, and every ordinal seen on two nodes at once.
        var samples = 0
        var ranTwice: [String] = []
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
        /// A pod that does not lead, publishing its own `leader.` record: what its agent said.
        var impostor: (status: Int, body: String) = (0, "")
        /// After the StatefulSet was deleted on the node that was cut: the group as the
        /// others see it, how long that took, and whether the node kept the group's data.
        var afterLeave: RaftGroupStatus?
        var left = Double.infinity
        var dataLeft = true
        /// The node gave up asking the leader to remove it (instead of being told it was out).
        var leftUnanswered = true
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
        #expect(observed.applies.allSatisfy { $0.contains("statefulset/counter") }, "\(observed.applies)")
        #expect(observed.samples > 20 && observed.ranTwice.isEmpty, "an ordinal ran on two nodes: \(observed.ranTwice)")
        // The node of lowest ID started the group and kept ordinal 0, elected first.
        #expect(
            observed.workloadLeaderNode == observed.cutNode,
            "the group's and the workload's leaders were on one node: \(observed.cutNode), \(observed.workloadLeaderNode ?? "none")"
        )
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
                        + "new leader after %.2f s; rejoined %.2f s after the heal; deleted there, it left the group "
                        + "and the others ran its ordinal %.2f s later; %d samples of where pods ran",
                    observed.writesAgain,
                    observed.leaderNameMoved,
                    observed.rejoined,
                    observed.left,
                    observed.samples
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
        // record (within a second); the cut one's lives out its 6 s; lookups no longer
        // wait for the cut node once it timed out.
        #expect(observed.leaderNameMoved < 15, "leader.counter moved \(observed.leaderNameMoved) s after the cut")
        let healed = try #require(observed.afterHeal)
        #expect(healed.ordinals.count == 3 && healed.ordinals.allSatisfy(\.ready), "\(healed.ordinals)")
        #expect(
            observed.impostor.status == 403 && observed.impostor.body.contains("does not lead"),
            "a pod that does not lead published its leader record: \(observed.impostor)"
        )
        let afterLeave = try #require(observed.afterLeave)
        #expect(
            afterLeave.members.count == 2 && !afterLeave.ordinals.contains { $0.node == observed.cutNode },
            "\(observed.cutNode) left: \(afterLeave.members), \(afterLeave.ordinals)"
        )
        #expect(!observed.dataLeft, "the node that left removed the group's data")
        #expect(!observed.leftUnanswered, "the leader told the leaving node it was out")
    }

    private static func raftStatus(lab name: String, node: Int) -> RaftGroupStatus? {
        try? AdminClient(endpoint: .unix(path: "/run/beemesh-lab/\(name)/nodes/\(node)/agent.sock"), timeout: 2)
            .get("/v1/raft?namespace=default&name=counter", as: [RaftGroupStatus].self).first
    }

    /// The node (`node-K`) of each counter pod on each node: a sample of where ordinals run.
    private static func podsByNode(lab name: String) -> [String: [String]] {
        var running: [String: [String]] = [:]
        for node in 1...3 {
            let pods = (try? lab(name, ["exec", "\(node)", "podman", "pod", "ps", "--format", "{{.Name}}"])) ?? ""
            for pod in pods.split(separator: "\n") where pod.hasPrefix("counter-") {
                running[String(pod), default: []].append("node-\(node)")
            }
        }
        return running
    }

    /// Pod `counter-ORDINAL` on node `node` signs `leader.counter` with its own identity
    /// and endpoint, and puts it through its own agent socket, as its sidecar would.
    private static func impostorPublishes(lab name: String, node: Int, ordinal: Int) throws -> (Int, String) {
        let pod = "counter-\(ordinal).default"
        let directory = Array(Digest.sha256(Array(pod.utf8)).prefix(8)).map { String(format: "%02x", $0) }.joined()
        let base = "/run/beemesh-lab/\(name)/nodes/\(node)/pods/\(directory)"
        let credentials = try WorkloadCredentials.load(
            certificate: base + "/identity/cert.pem",
            key: base + "/identity/key.pem",
            bundle: base + "/identity/bundle.pem"
        )
        let ports =
            try JSONSerialization.jsonObject(
                with: Data(
                    contentsOf: URL(fileURLWithPath: "/var/lib/beemesh-lab/\(name)/nodes/\(node)/state/host-ports.json")
                )
            ) as? [String: Int]
        let port = try #require(ports?[pod], "\(pod)'s host port")
        let now = Date().timeIntervalSince1970
        let record = try SignedServiceRecord.sign(
            ServiceRecord(
                service: "leader.counter",
                namespace: "default",
                endpoint: "10.250.0.\(node):\(port)",
                ports: [8080],
                spiffeID: credentials.spiffeID!.description,
                sequence: UInt64(now * 1000),
                expires: UInt64((now + 60) * 1e9)
            ),
            with: credentials
        )
        let body = try MeshJSON.encoder().encode(
            PublishRequest(record: Data(record.dhtRecord.value).base64EncodedString())
        )
        let (status, answer) = try AdminClient(endpoint: .unix(path: base + "/agent/agent.sock"), timeout: 5)
            .send("PUT", "/dht/records", body: Array(body))
        return (status, String(decoding: answer, as: UTF8.self))
    }

    private static func runRaftLab(name: String) throws -> RaftObserved {
        var observed = RaftObserved()
        _ = try? lab(name, ["down"], timeout: 120)  // what a killed earlier run left
        defer { _ = try? lab(name, ["down"], timeout: 120) }
        try lab(name, ["up", "3"], timeout: 300)
        // No ordinal may run on two nodes at once, from the first apply to the end:
        // sampled every half second.
        let sampling = NIOLockedValueBox((stop: false, samples: 0, twice: [String]()))
        let sampler = Thread {
            while !sampling.withLockedValue({ $0.stop }) {
                let twice = podsByNode(lab: name).filter { $0.value.count > 1 }.map { "\($0.key) on \($0.value)" }
                sampling.withLockedValue {
                    $0.samples += 1
                    $0.twice += twice
                }
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
        sampler.start()
        defer {
            sampling.withLockedValue { $0.stop = true }
            while sampler.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
        }
        // Applied on the three nodes at once: the node of lowest ID starts the group,
        // the others find it in the DHT and join. The counter's pods admit one another
        // on 8080 (leader.counter.default.mesh).
        let applied = NIOLockedValueBox([Int: String]())
        let appliers = (1...3).map { node in
            Thread {
                let outcome: String
                do {
                    try FileManager.default.copyItem(
                        atPath: root + "/deploy/policies/counter-allow.yaml",
                        toPath: "/var/lib/beemesh-lab/\(name)/nodes/\(node)/policies/counter-allow.yaml"
                    )
                    outcome = try lab(
                        name,
                        ["exec", "\(node)", "beectl", "apply", "-f", root + "/deploy/manifests/counter.yaml"],
                        timeout: 60
                    )
                } catch {
                    outcome = "failed: \(error)"
                }
                applied.withLockedValue { $0[node] = outcome }
            }
        }
        for applier in appliers { applier.start() }
        try waitUntil("the three applies", timeout: 90) { applied.withLockedValue { $0.count } == 3 }
        observed.applies = applied.withLockedValue { $0.sorted { $0.key < $1.key }.map(\.value) }
        try waitUntil("three voters, an ordinal ready on each node, a workload leader", timeout: 180) {
            let status = raftStatus(lab: name, node: 1)
            observed.formed = status
            return status?.members.count == 3 && status?.members.allSatisfy(\.voter) == true
                && status?.ordinals.filter(\.ready).count == 3 && status?.workloadLeader != nil
        }
        let formed = try #require(observed.formed)
        let leaderNode = try #require(formed.members.first { $0.id == formed.leader }?.node)
        observed.cutNode = leaderNode
        observed.workloadLeaderNode = formed.ordinals.first { "counter-\($0.ordinal)" == formed.workloadLeader }?.node
        // Two clients, on the two other nodes' pods' workload sockets: each reads what
        // the other may just have written, through another member.
        let others = formed.ordinals.filter { $0.node != leaderNode }
        let clients = others.enumerated().map { index, ordinal in
            let directory = Array(Digest.sha256(Array("counter-\(ordinal.ordinal).default".utf8)).prefix(8))
                .map { String(format: "%02x", $0) }.joined()
            let socket = "/run/beemesh-lab/\(name)/nodes/\(ordinal.node.dropFirst("node-".count))/pods/\(directory)"
            return WorkloadClient(socket: socket + "/agent/workload.sock", client: index)
        }
        let threads = clients.map { client in Thread { client.run() } }
        for thread in threads { thread.start() }
        defer {
            for client in clients { client.stop() }
            while threads.contains(where: \.isExecuting) { Thread.sleep(forTimeInterval: 0.01) }
        }
        let client = try #require(others.first)
        let clientIndex = Int(client.node.dropFirst("node-".count))!
        let cutIndex = Int(leaderNode.dropFirst("node-".count))!
        try waitUntil("the clients' writes are acknowledged", timeout: 20) {
            clients.allSatisfy { $0.lastAcknowledged > 0 }
        }
        // The leading pod, by its mesh name, from a client's pod.
        let hello = [
            "exec", "\(clientIndex)", "podman", "exec", "counter-\(client.ordinal).default.web",
            "curl", "-sS", "-m", "2", "http://leader.counter.default.mesh:8080/cgi-bin/hello",
        ]
        observed.expectedBefore = formed.workloadLeader ?? "?"
        // The attacker: a pod that does not lead signs its own leader record with its
        // own key and asks its agent to publish it. Refused.
        observed.impostor = try impostorPublishes(lab: name, node: clientIndex, ordinal: client.ordinal)
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
            clients.allSatisfy { $0.lastAcknowledged > cut.timeIntervalSince1970 }
        }
        observed.writesAgain =
            clients.map { $0.firstAcknowledged(after: cut.timeIntervalSince1970) }.max()! - cut.timeIntervalSince1970
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
        // Deleted on the node that was cut: its pod goes, then it leaves the group (its
        // claim released first) and its data goes; the two others run all three.
        try lab(
            name,
            ["exec", "\(cutIndex)", "beectl", "delete", "-f", root + "/deploy/manifests/counter.yaml"],
            timeout: 60
        )
        let deleted = Date()
        try waitUntil("two members running the three ordinals", timeout: 90) {
            observed.afterLeave = raftStatus(lab: name, node: clientIndex)
            return observed.afterLeave?.members.count == 2 && observed.afterLeave?.ordinals.filter(\.ready).count == 3
                && raftStatus(lab: name, node: cutIndex) == nil
        }
        observed.left = Date().timeIntervalSince(deleted)
        let log = (try? String(contentsOfFile: "/run/beemesh-lab/\(name)/nodes/\(cutIndex)/agent.log", encoding: .utf8))
        observed.leftUnanswered = log?.contains("left without an answer") ?? true
        observed.dataLeft = FileManager.default.fileExists(
            atPath: "/var/lib/beemesh-lab/\(name)/nodes/\(cutIndex)/state/raft/default/counter"
        )
        for client in clients { client.stop() }
        while threads.contains(where: \.isExecuting) { Thread.sleep(forTimeInterval: 0.01) }
        observed.history = clients.flatMap { $0.finalHistory() }
        sampling.withLockedValue { $0.stop = true }
        while sampler.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
        (observed.samples, observed.ranTwice) = sampling.withLockedValue { ($0.samples, $0.twice) }
        return observed
    }
}
