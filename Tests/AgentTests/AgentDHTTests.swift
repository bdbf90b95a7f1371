import Foundation
import Kademlia
import Logging
import MeshAPI
import MeshConfiguration
import MeshIdentity
import MeshProcess
import MeshTestSupport
import NIOCore
import NIOPosix
import Prometheus
import Testing

@testable import Agent

/// Two real DHT nodes on loopback (mutual TLS between node identities, the real state
/// machine on the wall clock), driven through the agent's API as a sidecar would:
/// a signed record is stored and found from the other node; forged, expired and
/// malformed records are refused before anything reaches the DHT.
@Suite struct AgentDHTTests {
    static let root = try! CertificateAuthority.createRoot(trustDomain: try! TrustDomain("agent.test"))
    /// Root on the control socket: every route is open to it.
    static let admin = APICaller.local(LocalUser(uid: 0, gid: 0, groups: [0]))

    struct Node {
        let service: DHTService
        let api: AgentAPI
        let loop: any EventLoop
    }

    private func node(
        _ name: String,
        directory: String,
        group: MultiThreadedEventLoopGroup,
        port: Int,
        bootstrap: [Int]
    ) throws -> Node {
        let caDirectory = directory + "/ca-" + name
        try Self.root.issueIntermediate(nodeName: name).write(to: caDirectory)
        var configuration = AgentConfiguration(
            node: .init(name: name, ca: caDirectory, stateDirectory: directory + "/state-" + name)
        )
        configuration.dht.listen = HostPort(host: "127.0.0.1", port: port)
        configuration.dht.bootstrap = bootstrap.map { HostPort(host: "127.0.0.1", port: $0) }
        configuration.dht.requestTimeout = 1
        let identity = try NodeIdentity.load(configuration.node)
        let loop = group.next()
        let service = try DHTService(
            identity: identity,
            configuration: configuration.dht,
            loop: loop,
            logger: Logger(label: "test-\(name)")
        )
        let validator = ServiceRecordValidator(bundle: identity.credentials.bundle)
        return Node(service: service, api: AgentAPI(dht: service, validator: validator), loop: loop)
    }

    private func publish(_ node: Node, _ record: SignedServiceRecord) async throws -> AgentAPI.Response {
        let body = try MeshJSON.encoder().encode(
            PublishRequest(record: Data(record.dhtRecord.value).base64EncodedString())
        )
        return try await node.api.respond(
            method: .PUT,
            path: "/dht/records",
            body: Array(body),
            caller: Self.admin,
            on: node.loop
        ).get()
    }

    private func record(
        _ credentials: WorkloadCredentials,
        service: String = "orders",
        endpoint: String,
        expiresIn seconds: Double = 60
    ) throws -> SignedServiceRecord {
        let now = Date().timeIntervalSince1970
        return try SignedServiceRecord.sign(
            ServiceRecord(
                service: service,
                namespace: "default",
                endpoint: endpoint,
                ports: [8080],
                spiffeID: credentials.spiffeID!.description,
                sequence: UInt64(now * 1000),
                expires: UInt64((now + seconds) * 1e9)
            ),
            with: credentials
        )
    }

    @Test func aSignedRecordIsFoundFromAnotherNodeAndForgedOnesAreRefused() async throws {
        let directory = TemporaryDirectory()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let first = try freePort()
        let second = try freePort()
        let a = try node("node-a", directory: directory.path, group: group, port: first, bootstrap: [])
        let b = try node("node-b", directory: directory.path, group: group, port: second, bootstrap: [first])
        try await a.service.start().get()
        try await b.service.start().get()

        let peersOfA = try await waitFor { try await a.service.peers().get().peers.count == 1 }
        #expect(peersOfA, "node-b joined node-a")

        let orders = try Self.root.issueWorkload(try SpiffeID("spiffe://agent.test/ns/default/sa/orders"))
        let stored = try await publish(b, try record(orders, endpoint: "10.0.0.12:15008"))
        #expect(stored.status == .ok, "\(String(decoding: stored.body, as: UTF8.self))")
        let result = try MeshJSON.decoder().decode(PublishResult.self, from: Data(stored.body))
        #expect(result.replicas == 1)

        let found = try await a.api.respond(
            method: .GET,
            path: "/dht/services/orders.default",
            body: [],
            caller: Self.admin,
            on: a.loop
        )
        .get()
        let lookup = try MeshJSON.decoder().decode(ServiceLookup.self, from: Data(found.body))
        #expect(lookup.endpoints.map(\.endpoint) == ["10.0.0.12:15008"])
        #expect(lookup.endpoints.first?.identity == "spiffe://agent.test/ns/default/sa/orders")

        // frontend's key cannot speak for orders; an expired record; another trust domain.
        let frontend = try Self.root.issueWorkload(try SpiffeID("spiffe://agent.test/ns/default/sa/frontend"))
        let forged = try await publish(b, try record(frontend, service: "orders", endpoint: "10.6.6.6:15008"))
        #expect(forged.status == .badRequest && String(decoding: forged.body, as: UTF8.self).contains("not_authorized"))
        let expired = try await publish(b, try record(orders, endpoint: "10.0.0.13:15008", expiresIn: -5))
        #expect(expired.status == .badRequest && String(decoding: expired.body, as: UTF8.self).contains("expired"))
        let stranger = try CertificateAuthority.createRoot(trustDomain: try TrustDomain("agent.test"))
            .issueWorkload(try SpiffeID("spiffe://agent.test/ns/default/sa/orders"))
        let untrusted = try await publish(b, try record(stranger, endpoint: "10.6.6.7:15008"))
        #expect(
            untrusted.status == .badRequest && String(decoding: untrusted.body, as: UTF8.self).contains("untrusted")
        )
        let garbage = try await a.api.respond(
            method: .PUT,
            path: "/dht/records",
            body: Array(#"{"record":"AAAA"}"#.utf8),
            caller: Self.admin,
            on: a.loop
        ).get()
        #expect(garbage.status == .badRequest)

        // None of them reached the DHT.
        let again = try await a.api.respond(
            method: .GET,
            path: "/dht/services/orders.default",
            body: [],
            caller: Self.admin,
            on: a.loop
        )
        .get()
        let endpoints = try MeshJSON.decoder().decode(ServiceLookup.self, from: Data(again.body)).endpoints
        #expect(endpoints.map(\.endpoint) == ["10.0.0.12:15008"])

        let unknownRoute = try await a.api.respond(
            method: .GET,
            path: "/dht/nothing",
            body: [],
            caller: Self.admin,
            on: a.loop
        ).get()
        #expect(unknownRoute.status == .notFound)
        let badName = try await a.api.respond(
            method: .GET,
            path: "/dht/services/orders",
            body: [],
            caller: Self.admin,
            on: a.loop
        ).get()
        #expect(badName.status == .badRequest)

        try await a.service.stop().get()
        try await b.service.stop().get()
        try await group.shutdownGracefully()
    }

    @Test func theNodeKeyAndSoTheNodeIDSurviveARestart() throws {
        let directory = TemporaryDirectory()
        let caDirectory = directory.path + "/ca"
        try Self.root.issueIntermediate(nodeName: "node-a").write(to: caDirectory)
        let node = AgentConfiguration.Node(name: "node-a", ca: caDirectory, stateDirectory: directory.path + "/state")
        let first = try NodeIdentity.load(node)
        let second = try NodeIdentity.load(node)
        #expect(first.id == second.id)
        #expect(first.spiffeID.description == "spiffe://agent.test/node/node-a")
        #expect(first.credentials.leaf.serialNumber != second.credentials.leaf.serialNumber)
    }

    /// `openssl s_client` as a foreign peer of the DHT listener: a workload identity (not
    /// a node) is cut off after the handshake, and a node that sends a frame longer than
    /// the limit is cut off too; both are counted and the node goes on serving.
    @Test func foreignPeersThatAreNotNodesOrSendGarbageAreCutOffAndCounted() async throws {
        let registry = MeshMetrics.registry
        let directory = TemporaryDirectory()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let port = try freePort()
        let a = try node("node-a", directory: directory.path, group: group, port: port, bootstrap: [])
        try await a.service.start().get()
        let nodeCA = try CertificateAuthority.load(directory: directory.path + "/ca-node-a")
        let intruders = [
            (
                "workload", try nodeCA.issueWorkload(try SpiffeID("spiffe://agent.test/ns/default/sa/orders")),
                "not_a_node"
            ),
            ("node", try nodeCA.issueWorkload(try SpiffeID("spiffe://agent.test/node/noisy")), "malformed_oversized"),
        ]
        for (name, credentials, reason) in intruders {
            try credentials.write(to: directory.path + "/" + name)
            let before = Self.counter(registry, reason: reason)
            let (_, output) = try await blocking {
                try runProcess(
                    [
                        "openssl", "s_client", "-quiet", "-tls1_3", "-alpn", "beemesh/1",
                        "-connect", "127.0.0.1:\(port)",
                        "-cert", directory.path + "/\(name)/cert.pem", "-cert_chain",
                        directory.path + "/\(name)/cert.pem",
                        "-key", directory.path + "/\(name)/key.pem",
                        "-CAfile", directory.path + "/\(name)/bundle.pem",
                    ],
                    input: [0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4],
                    timeout: 10
                )
            }
            #expect(Self.counter(registry, reason: reason) == before + 1, "\(name): \(output)")
        }
        // Still serving.
        let peers = try await a.api.respond(method: .GET, path: "/dht/peers", body: [], caller: Self.admin, on: a.loop)
            .get()
        #expect(peers.status == .ok)
        let page = try await a.api.respond(method: .GET, path: "/metrics", body: [], caller: Self.admin, on: a.loop)
            .get()
        #expect(page.status == .notFound, "this API was made without a registry")
        try await a.service.stop().get()
        try await group.shutdownGracefully()
    }

    private static func counter(_ registry: PrometheusCollectorRegistry, reason: String) -> Int {
        let prefix = "beemesh_dht_messages_rejected_total{reason=\"\(reason)\"} "
        for line in registry.emitToString().split(separator: "\n") where line.hasPrefix(prefix) {
            return Int(line.dropFirst(prefix.count)) ?? 0
        }
        return 0
    }

    private func waitFor(_ condition: () async throws -> Bool) async throws -> Bool {
        for _ in 0..<100 {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }
}
