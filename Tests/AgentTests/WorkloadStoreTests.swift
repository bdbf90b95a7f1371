import Foundation
import Logging
import MeshAPI
import MeshIdentity
import MeshNet
import MeshTestSupport
import Testing

@testable import Agent

/// The desired state: an apply is one atomic step, a crash leaves no stray files, and
/// no apply can make two objects fight over one pod.
@Suite struct WorkloadStoreTests {
    static func deployments(_ prefix: String, count: Int, replicas: Int = 0) -> String {
        (0..<count).map { index in
            """
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: \(prefix)-\(index)}
            spec:
              replicas: \(replicas)
              selector: {matchLabels: {app: x}}
              template:
                metadata: {labels: {app: x}}
                spec: {containers: [{name: web, image: localhost/app:1}]}
            """
        }.joined(separator: "\n---\n")
    }

    private func reconciler(_ directory: TemporaryDirectory) throws -> Reconciler {
        let root = try CertificateAuthority.createRoot(trustDomain: try TrustDomain("store.test"))
        return try Reconciler.forTests(in: directory.path, nodeCA: try root.issueIntermediate(nodeName: "node-1"))
    }

    /// Finding 9 of the node security review (c7e302b): `Deployment sec-c` and
    /// `Pod sec-c-0` both asked for pod sec-c-0, and each replaced the other's forever.
    @Test func anApplyThatWouldShareAPodNameIsRefusedAsAWhole() throws {
        let directory = TemporaryDirectory()
        let reconciler = try reconciler(directory)
        _ = try reconciler.apply(
            try KubernetesObject.parse(yaml: Self.deployments("sec", count: 3, replicas: 1), file: "a")
        )
        let pod = """
            apiVersion: v1
            kind: Pod
            metadata: {name: sec-2-0}
            spec: {containers: [{name: web, image: localhost/app:1}]}
            ---
            apiVersion: v1
            kind: Pod
            metadata: {name: innocent}
            spec: {containers: [{name: web, image: localhost/app:1}]}
            """
        #expect {
            _ = try reconciler.apply(try KubernetesObject.parse(yaml: pod, file: "pod.yaml"))
        } throws: { error in
            "\(error)"
                == "Deployment/default/sec-2 and Pod/default/sec-2-0 would both run pod sec-2-0 in namespace default"
        }
        #expect(reconciler.workload("Pod/default/innocent") == nil, "nothing of a refused apply is stored")
        #expect(try self.reconciler(directory).workload("Pod/default/innocent") == nil)
    }

    /// An unreadable state stops the agent instead of reconciling an empty one, which
    /// would remove every pod of the node.
    @Test func anUnreadableStateIsAnErrorNotAnEmptyNode() throws {
        let directory = TemporaryDirectory()
        try FileManager.default.createDirectory(
            atPath: directory.path + "/workloads",
            withIntermediateDirectories: true
        )
        try Data("[{\"kind\": ".utf8).write(to: URL(fileURLWithPath: directory.path + "/workloads/desired.json"))
        #expect(throws: WorkloadStore.Unreadable.self) { _ = try self.reconciler(directory) }
    }

    @Test func strayTemporaryFilesGoAndTheOldLayoutIsFoldedIn() throws {
        let directory = TemporaryDirectory()
        let workloads = directory.path + "/workloads"
        try FileManager.default.createDirectory(atPath: workloads, withIntermediateDirectories: true)
        let legacy = try #require(try KubernetesObject.parse(yaml: Self.deployments("old", count: 1), file: "x").first)
        try MeshJSON.encoder().encode(legacy).write(
            to: URL(fileURLWithPath: workloads + "/Deployment.default.old-0.json")
        )
        try Data("{half".utf8).write(to: URL(fileURLWithPath: workloads + "/desired.json.tmp-4242"))
        try Data("{half".utf8).write(to: URL(fileURLWithPath: workloads + "/Pod.default.x.json.tmp-99"))

        let reconciler = try reconciler(directory)
        #expect(reconciler.workload("Deployment/default/old-0") != nil)
        _ = try reconciler.apply(try KubernetesObject.parse(yaml: Self.deployments("new", count: 1), file: "y"))
        let names = try FileManager.default.contentsOfDirectory(atPath: workloads)
        #expect(names == ["desired.json"], "\(names)")
        let reread = try self.reconciler(directory)
        #expect(
            reread.workload("Deployment/default/old-0") != nil && reread.workload("Deployment/default/new-0") != nil
        )
    }

    /// Finding 11 of the node security review (c7e302b): an agent killed during an apply
    /// kept part of it (4 of 8 rounds) and left `*.json.tmp-PID` files. Here the real
    /// agent is killed (SIGKILL) at a random moment of each of 12 or more applies of 8 objects;
    /// after each restart a round is there whole or not at all, and no temporary file
    /// is left. (No podman: PATH is empty, so the agent stores and cannot run pods.)
    @Test func anAgentKilledDuringAnApplyKeepsAllOrNothingOfIt() async throws {
        let directory = TemporaryDirectory()
        let binaries = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path
        let root = try CertificateAuthority.createRoot(trustDomain: try TrustDomain("store.test"))
        try root.issueIntermediate(nodeName: "node-1").write(to: directory.path + "/ca")
        let socket = directory.path + "/agent.sock"
        try """
        node: {name: node-1, ca: \(directory.path)/ca, stateDirectory: \(directory.path)/state}
        dht: {listen: 127.0.0.1:\(try freePort())}
        api: {socket: \(socket)}
        pods: {podmanSocket: \(directory.path)/podman.sock, runDirectory: \(directory.path)/pods}
        logLevel: critical
        """.write(toFile: directory.path + "/agent.yaml", atomically: true, encoding: .utf8)
        let outcomes = try await blocking { () throws -> [(round: Int, stored: Int, strays: [String])] in
            var random = SplitMix64(seed: 0xA9_91_7E)
            var outcomes: [(Int, Int, [String])] = []
            // How long one apply takes here, so that the kills land before, during and
            // after it: uniformly within twice that.
            let warm = try Self.startAgent(binaries + "/beemesh-agent", config: directory.path + "/agent.yaml", socket)
            let started = ContinuousClock.now
            _ = try AdminClient(endpoint: .unix(path: socket), timeout: 5)
                .send("POST", "/v1/apply", body: Array(Self.deployments("warm", count: 8).utf8))
            var window = max(1_000, UInt64((ContinuousClock.now - started) / .microseconds(1)) * 2)
            warm.signal(SIGKILL)
            warm.waitUntilExit()
            // At least 12 rounds, and more (at most 40) until kills have landed both
            // before and after the commit point: on a loaded machine one apply can
            // take far longer than the warm one did, so a round that stored nothing
            // widens the window by half.
            var round = 0
            while round < 12 || (round < 40 && !(outcomes.contains { $0.1 == 0 } && outcomes.contains { $0.1 == 8 })) {
                defer { round += 1 }
                let agent = try Self.startAgent(
                    binaries + "/beemesh-agent",
                    config: directory.path + "/agent.yaml",
                    socket
                )
                let manifest = Array(Self.deployments("r\(round)", count: 8).utf8)
                let sender = Thread {
                    _ = try? AdminClient(endpoint: .unix(path: socket), timeout: 5).send(
                        "POST",
                        "/v1/apply",
                        body: manifest
                    )
                }
                sender.start()
                usleep(UInt32(random.next() % window))
                agent.signal(SIGKILL)
                agent.waitUntilExit()

                let check = try Self.startAgent(
                    binaries + "/beemesh-agent",
                    config: directory.path + "/agent.yaml",
                    socket
                )
                let listed = try AdminClient(endpoint: .unix(path: socket), timeout: 5)
                    .get("/v1/deployments", as: [DeploymentStatus].self)
                let strays = try FileManager.default.contentsOfDirectory(atPath: directory.path + "/state/workloads")
                    .filter { $0.contains(".tmp-") }
                check.signal(SIGKILL)
                check.waitUntilExit()
                let stored = listed.filter { $0.name.hasPrefix("r\(round)-") }.count
                outcomes.append((round, stored, strays))
                if stored == 0 { window += window / 2 }
            }
            return outcomes
        }
        // The kills landed both before and after the commit point, so they also
        // landed around it.
        let stored = outcomes.map(\.stored)
        #expect(stored.contains(0) && stored.contains(8), "stored per round: \(stored)")
        for outcome in outcomes {
            #expect(outcome.stored == 0 || outcome.stored == 8, "round \(outcome.round): \(outcome.stored) of 8 stored")
            #expect(outcome.strays.isEmpty, "round \(outcome.round): \(outcome.strays)")
        }
    }

    private static func startAgent(_ binary: String, config: String, _ socket: String) throws -> ChildProcess {
        let process = try ChildProcess.start(
            [binary, "run", "--config", config],
            environment: ["PATH": "/nonexistent"]
        )
        let deadline = Date() + 20
        while !AdminClient(endpoint: .unix(path: socket), timeout: 1).isReachable() {
            guard Date() < deadline, process.isRunning else {
                process.signal(SIGKILL)
                throw SocketError("the agent did not answer on \(socket)")
            }
            usleep(20_000)
        }
        return process
    }
}
