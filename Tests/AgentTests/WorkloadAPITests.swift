import Foundation
import Logging
import MeshAPI
import MeshIdentity
import MeshTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import RaftHost
import Testing

@testable import Agent

/// A node's StatefulSet groups (`RaftGroups`) and the workload API a pod reaches them
/// by, on a real unix socket with the agent's handler, as the sidecar relays it: the
/// group opens with the StatefulSet and claims its ordinals, keys are written with
/// revisions and swaps, reads and watches see them, the workload's leader is a ready
/// ordinal and moves when it stops being ready, and the group goes with its data.
@Suite struct WorkloadAPITests {
    static let root = try! CertificateAuthority.createRoot(trustDomain: try! TrustDomain("workload.test"))

    struct Fixture {
        let directory = TemporaryDirectory()
        let groups: RaftGroups
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var sockets: [Int: String] = [:]
        var servers: [any Channel] = []

        init() throws {
            try WorkloadAPITests.root.issueIntermediate(nodeName: "node-1").write(to: directory.path + "/ca")
            let configuration = AgentConfiguration(
                node: .init(name: "node-1", ca: directory.path + "/ca", stateDirectory: directory.path + "/state")
            )
            groups = try RaftGroups(
                configuration: configuration,
                identity: try NodeIdentity.load(configuration.node),
                dht: nil,
                logger: Logger(label: "test")
            )
        }

        /// Pod `ordinal`'s workload socket, served by the agent's handler.
        mutating func serve(ordinal: Int) throws -> AdminClient {
            let path = directory.path + "/workload-\(ordinal).sock"
            let groups = self.groups
            let binding = WorkloadAPIHandler.Binding(group: "shop/counter", ordinal: ordinal)
            let server = try ServerBootstrap(group: group)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(
                            WorkloadAPIHandler(
                                lookup: { groups.host($0) },
                                binding: binding,
                                logger: Logger(label: "api")
                            )
                        )
                    }
                }
                .bind(unixDomainSocketPath: path).wait()
            servers.append(server)
            return AdminClient(endpoint: .unix(path: path), timeout: 5)
        }

        func stop() async throws {
            for server in servers { try await server.close() }
            await groups.stop()
            try await group.shutdownGracefully()
        }
    }

    @Test func aPodReadsWritesSwapsAndWatchesItsGroupAndSeesItsLeader() async throws {
        var fixture = try Fixture()
        let groups = fixture.groups
        // The StatefulSet runs 3 ordinals here: all claimed by this node.
        let holders = await blockingValue { groups.ensure(["shop/counter": 3]) }
        #expect(holders["shop/counter"] == [0: .here, 1: .here, 2: .here])
        let zero = try fixture.serve(ordinal: 0)
        let one = try fixture.serve(ordinal: 1)

        // Nobody ready: no leader.
        let none = try zero.get("/v1/leader", as: WorkloadAPI.Leader.self)
        #expect(none.leader == nil && !none.isSelf)

        // Writes, a swap that names the wrong revision, raw reads with the revision.
        let absent = try zero.get("/v1/kv/count")
        #expect(absent.status == 404)
        let created = try Self.write(zero, "PUT", "/v1/kv/count?cas=0", "1")
        #expect(created.status == 200)
        let createdAt = try #require(try Self.decode(WorkloadAPI.WriteResult.self, created.body).revision)
        let again = try Self.write(one, "PUT", "/v1/kv/count?cas=0", "9")
        #expect(again.status == 409, "only if absent: it exists")
        let conflict = try Self.decode(WorkloadAPI.WriteResult.self, again.body)
        #expect(
            conflict.current?.modRevision == createdAt
                && conflict.current?.value == Data("1".utf8).base64EncodedString()
        )
        #expect(try Self.write(one, "PUT", "/v1/kv/count?cas=\(createdAt)", "2").status == 200)
        let raw = try zero.get("/v1/kv/count?raw")
        #expect(raw.status == 200 && raw.body == Array("2".utf8))
        let entry = try zero.get("/v1/kv/count", as: WorkloadAPI.Entry.self)
        #expect(entry.version == 2 && entry.createRevision == createdAt && entry.modRevision > createdAt)
        #expect(try zero.get("/v1/kv/count?stale", as: WorkloadAPI.Entry.self) == entry)

        // A watch from the creation's revision replays the change after it, then
        // follows new ones; a prefix range lists keys in order.
        let lines = NIOLockedValueBox<[WorkloadAPI.Event]>([])
        let cancellation = StreamCancellation()
        let watcher = Thread {
            _ = try? one.stream("/v1/kv/count?watch&revision=\(createdAt)", cancellation: cancellation) { _, bytes in
                for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                    if let event = try? MeshJSON.decoder().decode(WorkloadAPI.Event.self, from: Data(line.utf8)) {
                        lines.withLockedValue { $0.append(event) }
                    }
                }
                return true
            }
        }
        watcher.start()
        try await waitFor("the watch replays the change after its revision") { lines.withLockedValue { $0.count } >= 1 }
        #expect(try Self.write(zero, "DELETE", "/v1/kv/count", "").status == 200)
        _ = try Self.write(zero, "PUT", "/v1/kv/config/b", "B")
        _ = try Self.write(zero, "PUT", "/v1/kv/config/a", "A")
        try await waitFor("the watch sees the delete") { lines.withLockedValue { $0.count } >= 2 }
        cancellation.cancel()
        let seen = lines.withLockedValue { $0 }
        #expect(seen.map { $0.type } == ["put", "delete"], "\(seen)")
        #expect(seen.first?.value == Data("2".utf8).base64EncodedString())
        let range = try zero.get("/v1/kv/config/?prefix", as: WorkloadAPI.Range.self)
        #expect(range.entries.map(\.key) == ["config/a", "config/b"])

        // Bad input: a clear error each, nothing written.
        #expect(try zero.get("/v1/kv/x?cas=minus").status == 400)
        #expect(try zero.get("/v1/other").status == 404)
        #expect(try Self.write(zero, "PUT", "/v1/kv/", "v").status == 400)
        #expect(try Self.write(zero, "PUT", "/v1/kv/big", String(repeating: "x", count: 70_000)).status == 413)
        #expect(try zero.get("/v1/kv/" + String(repeating: "k", count: 600)).status == 400)

        // Ordinal 1 ready: it leads; it stops being ready: ordinal 0, now ready, does.
        await blockingValue { groups.report(ready: ["shop/counter": [0: false, 1: true, 2: false]]) }
        try await waitFor("ordinal 1 leads") {
            (try? one.get("/v1/leader", as: WorkloadAPI.Leader.self))?.isSelf == true
        }
        let first = try zero.get("/v1/leader", as: WorkloadAPI.Leader.self)
        #expect(first.leader == "counter-1" && !first.isSelf)
        await blockingValue { groups.report(ready: ["shop/counter": [0: true, 1: false, 2: false]]) }
        try await waitFor("ordinal 0 leads") {
            (try? zero.get("/v1/leader", as: WorkloadAPI.Leader.self))?.isSelf == true
        }
        let second = try zero.get("/v1/leader", as: WorkloadAPI.Leader.self)
        #expect(second.revision > first.revision, "the fencing token grew")

        // Scaled to 2: ordinal 2's claim goes once it is no longer reported.
        await blockingValue { groups.report(ready: ["shop/counter": [0: true, 1: false]]) }
        let status = try #require(try await groups.statuses.get().first)
        #expect(status.ordinals.map(\.ordinal) == [0, 1] && status.workloadLeader == "counter-0")
        #expect(status.role == "leader" && status.members.count == 1 && status.keys == 2)

        // The StatefulSet is deleted: its group goes, with its data.
        let data = fixture.directory.path + "/state/raft/shop/counter"
        #expect(FileManager.default.fileExists(atPath: data + "/wal"))
        _ = await blockingValue { groups.ensure([:]) }
        #expect(!FileManager.default.fileExists(atPath: data))
        #expect(try zero.get("/v1/kv/config/a").status == 503)
        try await fixture.stop()
    }

    static func write(_ client: AdminClient, _ method: String, _ path: String, _ value: String) throws -> (
        status: Int, body: [UInt8]
    ) {
        try client.send(method, path, body: Array(value.utf8))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ body: [UInt8]) throws -> T {
        try MeshJSON.decoder().decode(type, from: Data(body))
    }

    func blockingValue<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: body()) }
        }
    }

    func waitFor(_ what: String, _ condition: @escaping () throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if (try? condition()) == true { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("timed out waiting: \(what)")
    }
}
