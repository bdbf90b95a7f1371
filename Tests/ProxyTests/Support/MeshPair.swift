import Foundation
import Logging
import MeshConfiguration
import MeshIdentity
import MeshProcess
import NIOCore
import Proxy

/// Two real sidecars in this process, a trust domain of their own, and credentials on
/// disk: `frontend` (client side, with routes) talks to `orders` (server side).
final class MeshPair {
    let directory: String
    let root: CertificateAuthority
    let server: ProxyServer
    let client: ProxyServer
    let serverAddresses: ProxyServer.BoundAddresses
    let clientAddresses: ProxyServer.BoundAddresses
    /// The server's policy directory.
    let policyDirectory: String

    /// Admits every peer of the `default` namespace (the pair's two identities).
    static let allowDefaultNamespace = """
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: allow-default, namespace: default}
        spec:
          action: ALLOW
          rules: [{from: [{namespaces: [default]}]}]
        """

    static let logger: Logger = {
        var logger = Logger(label: "beemesh-test")
        logger.logLevel =
            ProcessInfo.processInfo.environment["BEEMESH_TEST_LOG"].flatMap { Logger.Level(rawValue: $0) } ?? .critical
        return logger
    }()

    /// - Parameters:
    ///   - routes: (service, app port) pairs, each becoming a route on the client side.
    ///   - allowedPorts: the server's `inbound.ports`.
    ///   - policies: the server's first policy file.
    init(
        routes: [(service: String, port: Int)],
        allowedPorts: [Int],
        policies: String = MeshPair.allowDefaultNamespace,
        idle: String = "1h",
        serverInboundPort: Int = 0,
        engine: RelayEngine = .direct,
        serverInbound: String = "",
        serverTimeouts: String = "",
        clientTimeouts: String = "",
        endpointsBefore: [String] = []
    ) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("beemesh-pair-\(UUID())").path
        root = try CertificateAuthority.createRoot(trustDomain: try TrustDomain("example.org"))
        try root.issueWorkload(try SpiffeID("spiffe://example.org/ns/default/sa/orders")).write(
            to: directory + "/orders"
        )
        try root.issueWorkload(try SpiffeID("spiffe://example.org/ns/default/sa/frontend")).write(
            to: directory + "/frontend"
        )

        policyDirectory = directory + "/policies"
        try FileManager.default.createDirectory(atPath: policyDirectory, withIntermediateDirectories: true)
        try policies.write(toFile: policyDirectory + "/00-pair.yaml", atomically: true, encoding: .utf8)
        let serverYAML = """
            identity: {certificate: \(directory)/orders/cert.pem, privateKey: \(directory)/orders/key.pem, trustBundle: \(directory)/orders/bundle.pem}
            policies: {directory: \(policyDirectory)}
            inbound: {listen: 127.0.0.1:\(serverInboundPort), services: [orders.default], ports: [\(allowedPorts.map(String.init).joined(separator: ", "))]\(serverInbound)}
            admin: {listen: 127.0.0.1:0, socket: \(directory)/orders-admin.sock}
            metrics: {listen: 127.0.0.1:0}
            timeouts: {idle: \(idle)\(serverTimeouts)}
            relayEngine: \(engine.rawValue)
            """
        server = try ProxyServer(
            configuration: try .parse(yaml: serverYAML, file: "server.yaml"),
            logger: Self.logger,
            metrics: MeshMetrics.registry
        )
        serverAddresses = try await server.start()

        let inboundPort = serverAddresses.inbound.port!
        let routeYAML = routes.map { route in
            """
              - listen: 127.0.0.1:0
                service: \(route.service)
                port: \(route.port)
                endpoints: [\((endpointsBefore + ["127.0.0.1:\(inboundPort)"]).map { "{address: \($0), identity: spiffe://example.org/ns/default/sa/orders}" }.joined(separator: ", "))]
            """
        }.joined(separator: "\n")
        let clientYAML = """
            identity: {certificate: \(directory)/frontend/cert.pem, privateKey: \(directory)/frontend/key.pem, trustBundle: \(directory)/frontend/bundle.pem}
            inbound: {listen: 127.0.0.1:0}
            admin: {listen: 127.0.0.1:0, socket: \(directory)/frontend-admin.sock}
            metrics: {listen: 127.0.0.1:0}
            timeouts: {idle: \(idle)\(clientTimeouts)}
            relayEngine: \(engine.rawValue)
            routes:\(routes.isEmpty ? " []" : "\n" + routeYAML)
            """
        client = try ProxyServer(
            configuration: try .parse(yaml: clientYAML, file: "client.yaml"),
            logger: Self.logger,
            metrics: MeshMetrics.registry
        )
        clientAddresses = try await client.start()
    }

    /// An app behind a pair whose one route (`orders.default`) and allowed port lead to
    /// it; `policies` writes the server's policy file for the app's port.
    static func serving(
        _ makeHandler: @escaping @Sendable () -> any ChannelHandler,
        policies: (Int) -> String = { _ in MeshPair.allowDefaultNamespace },
        engine: RelayEngine = .direct
    ) async throws -> (app: any Channel, pair: MeshPair) {
        let app = try await TestApp.start(makeHandler)
        let port = app.localAddress!.port!
        let pair = try await MeshPair(
            routes: [("orders.default", port)],
            allowedPorts: [port],
            policies: policies(port),
            engine: engine
        )
        return (app, pair)
    }

    /// The admin API sockets of the two sidecars.
    var serverAdminSocket: String { directory + "/orders-admin.sock" }
    var clientAdminSocket: String { directory + "/frontend-admin.sock" }

    /// The local port of route `index` on the client sidecar.
    func routePort(_ index: Int = 0) -> Int { clientAddresses.routes[index].port! }

    /// Issues fresh credentials for both sides, replacing the files atomically.
    func rotate() throws {
        try root.issueWorkload(try SpiffeID("spiffe://example.org/ns/default/sa/orders")).write(
            to: directory + "/orders"
        )
        try root.issueWorkload(try SpiffeID("spiffe://example.org/ns/default/sa/frontend")).write(
            to: directory + "/frontend"
        )
    }

    func shutdown() async {
        await client.shutdown(drain: 0)
        await server.shutdown(drain: 0)
        try? FileManager.default.removeItem(atPath: directory)
    }
}
