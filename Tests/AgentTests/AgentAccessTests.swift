import Foundation
import Kademlia
import Logging
import MeshAPI
import MeshConfiguration
import MeshIdentity
import MeshTestSupport
import NIOCore
import NIOPosix
import Testing

@testable import Agent

/// Finding 1 of the node security review (c7e302b): the agent's socket was mode 0666 and
/// checked no caller, so an unprivileged user applied a Deployment running as
/// `serviceAccountName: orders` and became orders; every sidecar had the same socket.
/// Here the attackers are real processes on real sockets: `beectl` run as uid 65534
/// (`setpriv`), a pod's sidecar on its own socket publishing what is not its own, and a
/// TCP client. Needs root (setpriv, chown); CI runs as root.
@Suite(.serialized) struct AgentAccessTests {
    static let root = try! CertificateAuthority.createRoot(trustDomain: try! TrustDomain("access.test"))
    static let nobody: UInt32 = 65534

    /// An agent's API with a reconciler that stores objects (podman is never started).
    final class Agent: @unchecked Sendable {
        let directory = TemporaryDirectory()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let dht: DHTService
        let reconciler: Reconciler
        let sockets: PodSockets
        let api: AgentAPI
        var channels: [any Channel] = []
        var socket: String { directory.path + "/agent.sock" }

        init(
            access: APIAccess,
            sidecars: (@Sendable () -> [(pod: String, socket: String)])? = nil,
            sidecarDeadline: Double = 1
        ) throws {
            chmod(directory.path, 0o755)
            let nodeCA = try AgentAccessTests.root.issueIntermediate(nodeName: "node-1")
            let caDirectory = directory.path + "/ca"
            try nodeCA.write(to: caDirectory)
            var configuration = AgentConfiguration(
                node: .init(name: "node-1", ca: caDirectory, stateDirectory: directory.path + "/state")
            )
            configuration.dht.listen = HostPort(host: "127.0.0.1", port: try freePort())
            let identity = try NodeIdentity.load(configuration.node)
            dht = try DHTService(
                identity: identity,
                configuration: configuration.dht,
                loop: group.next(),
                logger: Logger(label: "test")
            )
            sockets = PodSockets(group: group, sidecarUser: 1337, logger: Logger(label: "test"))
            reconciler = try Reconciler.forTests(in: directory.path, nodeCA: identity.nodeCA, podSockets: sockets)
            var api = AgentAPI(
                dht: dht,
                validator: ServiceRecordValidator(bundle: identity.credentials.bundle),
                access: access,
                reconciler: reconciler
            )
            api.sidecars = sidecars
            api.sidecarDeadline = sidecarDeadline
            self.api = api
            sockets.serve(api)
        }

        /// Serves the control socket as the agent does: owner root, this group, 0660.
        func serveControl(group socketGroup: UInt32) throws {
            let channel = try APIListeners.control(group: group, api: api).bind(unixDomainSocketPath: socket).wait()
            chown(socket, 0, socketGroup)
            chmod(socket, 0o660)
            channels.append(channel)
        }

        func serveTCP() throws -> Int {
            let channel = try APIListeners.network(group: group, api: api).bind(host: "127.0.0.1", port: 0).wait()
            channels.append(channel)
            return channel.localAddress?.port ?? 0
        }

        deinit {
            sockets.closeAll()
            for channel in channels { try? channel.close().wait() }
            try? group.syncShutdownGracefully()
        }
    }

    /// `beectl ARGS --agent SOCKET` as uid/gid 65534 with no supplementary groups.
    private func beectlAsNobody(_ arguments: [String], agent: Agent) throws -> (status: Int32, output: String) {
        let beectl = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("beectl").path
        return try runProcess(
            ["setpriv", "--reuid", "\(Self.nobody)", "--regid", "\(Self.nobody)", "--clear-groups", beectl]
                + arguments + ["--agent", agent.socket],
            input: []
        )
    }

    private func manifest(_ agent: Agent, name: String, namespace: String, account: String) throws -> String {
        let path = agent.directory.path + "/\(name).yaml"
        try """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: \(name), namespace: \(namespace)}
        spec:
          selector: {matchLabels: {app: \(name)}}
          template:
            metadata: {labels: {app: \(name)}}
            spec:
              serviceAccountName: \(account)
              containers: [{name: web, image: localhost/app:1}]
        """.write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        return path
    }

    @Test func aLocalUserOutsideTheSocketsGroupCannotConnect() async throws {
        let agent = try Agent(access: APIAccess())
        try agent.serveControl(group: 0)
        var status = stat()
        #expect(stat(agent.socket, &status) == 0 && status.st_mode & 0o777 == 0o660 && status.st_gid == 0)
        let path = try manifest(agent, name: "evil", namespace: "default", account: "orders")
        let (exit, output) = try await blocking { try self.beectlAsNobody(["apply", "-f", path], agent: agent) }
        #expect(exit != 0 && output.contains("ermission denied"), "\(output)")
        #expect(agent.reconciler.workload("Deployment/default/evil") == nil)
    }

    @Test func aLocalUserWithoutAGrantIsRefusedEverythingButHealth() async throws {
        let agent = try Agent(access: APIAccess())
        try agent.serveControl(group: Self.nobody)
        let path = try manifest(agent, name: "evil", namespace: "default", account: "orders")
        for arguments in [["apply", "-f", path], ["get", "pods"], ["flows"], ["delete", "deployment", "frontend"]] {
            let (exit, output) = try await blocking { try self.beectlAsNobody(arguments, agent: agent) }
            #expect(
                exit == 1 && output.contains("forbidden: uid 65534 (gid 65534) has no grant"),
                "\(arguments): \(output)"
            )
        }
        #expect(agent.reconciler.workload("Deployment/default/evil") == nil)
    }

    @Test func aGrantCoversItsNamespacesAndServiceAccountsAndNothingElse() async throws {
        let grant = APIAccess.Grant(subject: .user(Self.nobody), namespaces: ["shop"], serviceAccounts: ["frontend"])
        let agent = try Agent(access: APIAccess(grants: [grant]))
        try agent.serveControl(group: Self.nobody)
        // Root's own objects in another namespace, which the tenant must neither see nor touch.
        let theirs = try KubernetesObject.parse(
            yaml: try String(
                contentsOfFile: try manifest(agent, name: "billing", namespace: "ops", account: "billing"),
                encoding: .utf8
            ),
            file: "ops.yaml"
        )
        _ = try agent.reconciler.apply(theirs)

        let becomeOrders = try manifest(agent, name: "evil", namespace: "shop", account: "orders")
        let (refused, why) = try await blocking {
            try self.beectlAsNobody(["apply", "-f", becomeOrders], agent: agent)
        }
        #expect(refused == 1 && why.contains("no grant covers service account orders in namespace shop"), "\(why)")
        #expect(agent.reconciler.workload("Deployment/shop/evil") == nil)

        let own = try manifest(agent, name: "frontend", namespace: "shop", account: "frontend")
        let (applied, output) = try await blocking { try self.beectlAsNobody(["apply", "-f", own], agent: agent) }
        #expect(applied == 0 && output.contains("deployment/frontend created"), "\(output)")

        let (listed, deployments) = try await blocking {
            try self.beectlAsNobody(["get", "deployments"], agent: agent)
        }
        #expect(listed == 0 && deployments.contains("frontend") && !deployments.contains("billing"), "\(deployments)")
        let (deleted, answer) = try await blocking {
            try self.beectlAsNobody(["delete", "deployment", "billing", "-n", "ops"], agent: agent)
        }
        #expect(deleted == 1 && answer.contains("forbidden"), "\(answer)")
        #expect(agent.reconciler.workload("Deployment/ops/billing") != nil)
    }

    @Test func theTCPListenerAuthenticatesNobody() async throws {
        let agent = try Agent(access: APIAccess())
        let port = try agent.serveTCP()
        let client = AdminClient(endpoint: .tcp(host: "127.0.0.1", port: port), timeout: 5)
        let (live, _) = try await blocking { try client.get("/live") }
        #expect(live == 200)
        for path in ["/v1/pods", "/dht/peers", "/metrics", "/flows"] {
            let (status, body) = try await blocking { try client.get(path) }
            #expect(status == 401 && String(decoding: body, as: UTF8.self).contains("unauthenticated"), "\(path)")
        }
    }

    /// A compromised sidecar holds its pod's socket: it may look records up and publish
    /// its own pod's record, and nothing else: not another identity's, not another
    /// endpoint, not an apply.
    @Test func aPodsSocketPublishesOnlyThatPodsOwnRecord() async throws {
        let agent = try Agent(access: APIAccess())
        try await agent.dht.start().get()
        let path = agent.directory.path + "/pod/agent.sock"
        try FileManager.default.createDirectory(
            atPath: agent.directory.path + "/pod",
            withIntermediateDirectories: true
        )
        let binding = PodBinding(
            pod: "shop/frontend-0",
            identity: "spiffe://access.test/ns/shop/sa/frontend",
            service: "frontend.shop",
            endpoint: "10.88.0.5:15008"
        )
        try agent.sockets.open(binding, at: path, key: "frontend-0.shop")
        var status = stat()
        #expect(stat(path, &status) == 0 && status.st_mode & 0o777 == 0o600 && status.st_uid == 1337)

        let frontend = try Self.root.issueWorkload(try SpiffeID("spiffe://access.test/ns/shop/sa/frontend"))
        let orders = try Self.root.issueWorkload(try SpiffeID("spiffe://access.test/ns/shop/sa/orders"))
        let client = AdminClient(endpoint: .unix(path: path), timeout: 5)
        @Sendable func publish(
            _ credentials: WorkloadCredentials,
            _ service: String,
            _ endpoint: String,
            ttl: Double = 60,
            ports: [UInt16] = [8080],
            via client: AdminClient = client
        ) throws -> (Int, String) {
            let now = Date().timeIntervalSince1970
            let record = try SignedServiceRecord.sign(
                ServiceRecord(
                    service: service,
                    namespace: "shop",
                    endpoint: endpoint,
                    ports: ports,
                    spiffeID: credentials.spiffeID!.description,
                    sequence: UInt64(now * 1000),
                    expires: UInt64((now + ttl) * 1e9)
                ),
                with: credentials
            )
            let body = try MeshJSON.encoder().encode(
                PublishRequest(record: Data(record.dhtRecord.value).base64EncodedString())
            )
            let (status, answer) = try client.send("PUT", "/dht/records", body: Array(body))
            return (status, String(decoding: answer, as: UTF8.self))
        }
        let asOrders = try await blocking { try publish(orders, "orders", "10.88.0.5:15008") }
        #expect(asOrders.0 == 403 && asOrders.1.contains("not this pod's identity"), "\(asOrders)")
        let elsewhere = try await blocking { try publish(frontend, "frontend", "10.88.0.99:15008") }
        #expect(elsewhere.0 == 403 && elsewhere.1.contains("not this pod's"), "\(elsewhere)")
        let own = try await blocking { try publish(frontend, "frontend", "10.88.0.5:15008") }
        #expect(own.0 == 200, "\(own)")
        let lookup = try await blocking { try client.get("/dht/services/frontend.shop") }
        #expect(lookup.status == 200)
        // A leader record (leader.frontend): only a StatefulSet's pod publishes one, and
        // only while its group says it leads, however short its life; withdrawing one
        // (a tombstone: no port, which no client dials) is always allowed.
        let notStateful = try await blocking { try publish(frontend, "leader.frontend", "10.88.0.5:15008") }
        #expect(notStateful.0 == 403 && notStateful.1.contains("no StatefulSet's"), "\(notStateful)")
        let statefulPath = agent.directory.path + "/pod/stateful.sock"
        try agent.sockets.open(
            PodBinding(
                pod: "shop/frontend-1",
                identity: "spiffe://access.test/ns/shop/sa/frontend",
                service: "frontend.shop",
                endpoint: "10.88.0.6:15008",
                workload: .init(group: "shop/frontend", ordinal: 1)
            ),
            at: statefulPath,
            key: "frontend-1.shop"
        )
        let stateful = AdminClient(endpoint: .unix(path: statefulPath), timeout: 5)
        let notLeading = try await blocking {
            try publish(frontend, "leader.frontend", "10.88.0.6:15008", via: stateful)
        }
        #expect(notLeading.0 == 403 && notLeading.1.contains("Raft group"), "\(notLeading)")
        let shortLived = try await blocking {
            try publish(frontend, "leader.frontend", "10.88.0.6:15008", ttl: 2, via: stateful)
        }
        #expect(shortLived.0 == 403 && shortLived.1.contains("Raft group"), "\(shortLived)")
        let withdrawn = try await blocking {
            try publish(frontend, "leader.frontend", "10.88.0.6:15008", ttl: 2, ports: [], via: stateful)
        }
        #expect(withdrawn.0 == 200, "\(withdrawn)")
        let manifest = try manifest(agent, name: "evil", namespace: "shop", account: "orders")
        let (applied, _) = try await blocking {
            try client.send(
                "POST",
                "/v1/apply?file=x",
                body: Array(try Data(contentsOf: URL(fileURLWithPath: manifest)))
            )
        }
        #expect(applied == 403)
        for path in ["/v1/pods", "/flows", "/dht/peers", "/metrics"] {
            let (status, _) = try await blocking { try client.get(path) }
            #expect(status == 403, "\(path)")
        }
        #expect(agent.reconciler.workload("Deployment/shop/evil") == nil)
        try await agent.dht.stop().get()
    }

    /// A Service is its namesake account's: a tenant of `frontend` must not rewrite
    /// Service `orders`, which orders' pods publish themselves under.
    @Test func aServiceIsWrittenOnlyWithItsNamesakeAccount() throws {
        let tenant = APIAccess(grants: [
            .init(subject: .user(1000), namespaces: ["shop"], serviceAccounts: ["frontend"])
        ]).permissions(for: LocalUser(uid: 1000, gid: 1000, groups: [1000]))
        func service(_ name: String) throws -> KubernetesObject {
            try #require(
                try KubernetesObject.parse(
                    yaml: "apiVersion: v1\nkind: Service\nmetadata: {name: \(name), namespace: shop}\n"
                        + "spec: {selector: {app: \(name)}, ports: [{port: 8080}]}",
                    file: "svc.yaml"
                ).first
            )
        }
        #expect(AgentAPI.writeRefusal(try service("orders"), tenant)?.contains("service account orders") == true)
        #expect(AgentAPI.writeRefusal(try service("frontend"), tenant) == nil)
    }

    @Test func permissionsFollowTheGrants() {
        let access = APIAccess(grants: [
            .init(subject: .group(100), admin: true),
            .init(subject: .user(1000), namespaces: ["shop"], serviceAccounts: ["frontend", "orders"]),
            .init(subject: .group(2000), namespaces: ["*"], serviceAccounts: ["*"]),
        ])
        let admin = access.permissions(for: LocalUser(uid: 1500, gid: 5, groups: [5, 100]))
        #expect(admin.admin)
        #expect(access.permissions(for: LocalUser(uid: 0, gid: 0, groups: [0])).admin)
        let tenant = access.permissions(for: LocalUser(uid: 1000, gid: 1000, groups: [1000]))
        #expect(!tenant.admin && tenant.isKnown)
        #expect(tenant.mayWrite(namespace: "shop", serviceAccount: "orders"))
        #expect(tenant.mayWrite(namespace: "shop", serviceAccount: nil))
        #expect(!tenant.mayWrite(namespace: "shop", serviceAccount: "admin"))
        #expect(!tenant.mayWrite(namespace: "ops", serviceAccount: "frontend"))
        #expect(tenant.mayRead(namespace: "shop") && !tenant.mayRead(namespace: "ops"))
        let wide = access.permissions(for: LocalUser(uid: 3000, gid: 2000, groups: [2000]))
        #expect(wide.mayWrite(namespace: "any", serviceAccount: "any") && !wide.admin)
        #expect(!tenant.mayPublish && !wide.mayPublish && admin.mayPublish)
        let sidecars = APIAccess(grants: [.init(subject: .user(1337), publish: true)])
        let sidecar = sidecars.permissions(for: LocalUser(uid: 1337, gid: 1337, groups: [1337]))
        #expect(
            sidecar.mayPublish && sidecar.isKnown && !sidecar.admin
                && !sidecar.mayWrite(namespace: "default", serviceAccount: nil)
        )
        let stranger = access.permissions(for: LocalUser(uid: 4000, gid: 4000, groups: [4000]))
        #expect(!stranger.isKnown && !stranger.mayRead(namespace: "default"))
    }
}
