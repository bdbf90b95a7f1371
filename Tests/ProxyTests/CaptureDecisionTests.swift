import MeshConfiguration
import MeshNet
import NIOCore
import Policy
import Testing

@testable import Proxy

/// Where a captured outbound connection goes, decided from the destination alone: no
/// nftables, no socket (the capture end-to-end tests carry the same decisions out).
@Suite struct CaptureDecisionTests {
    static let routes: CaptureRoutes = {
        let route = ProxyConfiguration.Route(
            listen: nil,
            match: [.init(network: try! IPNetwork(parsing: "10.96.0.0/16"), port: 80)],
            service: "orders.shop",
            port: 8080,
            endpoints: [.init(address: HostPort(host: "10.0.0.1", port: 15008), identity: try! .init("spiffe://t/x"))]
        )
        return CaptureRoutes([(route, EndpointRotation(route.endpoints))])
    }()

    static let egress: EgressSet = {
        let yaml =
            "{apiVersion: beemesh.io/v1, kind: EgressPolicy, metadata: {name: provider, namespace: shop}, "
            + "spec: {action: ALLOW, rules: [{to: [{cidrs: [203.0.113.0/24], ports: [443]}]}]}}"
        let documents = try! PolicyDocuments.parse(yaml, file: "egress.yaml")
        return EgressSet(documents.egress, for: Workload(namespace: "shop"))
    }()

    /// The virtual IPs mesh DNS gave out in this test: 240.0.0.7 is payments.
    static func virtualService(_ address: [UInt8]) -> String? {
        address == [240, 0, 0, 7] ? "payments.shop" : nil
    }

    static func decide(_ host: String, _ port: Int, listener: SocketAddress? = nil) throws -> String {
        let decision = CaptureDecision.decide(
            try SocketAddress(ipAddress: host, port: port),
            listener: listener,
            virtualService: virtualService,
            routes: routes,
            egress: egress
        )
        switch decision {
        case .loop: return "loop"
        case .noAddress: return "no address"
        case .meshService(let service, let port): return "mesh \(service):\(port)"
        case .route(let entry): return "route \(entry.route.service):\(entry.route.port)"
        case .passThrough(let policy): return "pass \(policy)"
        case .egressDenied(let policy): return "deny \(policy)"
        }
    }

    @Test func eachDestinationGoesWhereTheTableSays() throws {
        #expect(
            try Self.decide("127.0.0.1", 15001, listener: try SocketAddress(ipAddress: "127.0.0.1", port: 15001))
                == "loop"
        )
        #expect(try Self.decide("240.0.0.7", 9090) == "mesh payments.shop:9090")
        #expect(try Self.decide("10.96.3.4", 80) == "route orders.shop:8080")
        #expect(try Self.decide("10.96.3.4", 81).hasPrefix("deny"), "the route matches port 80 only")
        #expect(try Self.decide("203.0.113.9", 443) == "pass allow by shop/provider#0")
        #expect(try Self.decide("203.0.113.9", 80).hasPrefix("deny"))
        #expect(try Self.decide("198.51.100.1", 443).hasPrefix("deny"), "no egress policy: refused")
    }

    /// A virtual IP wins over a route that happens to cover it, and a route wins over an
    /// egress policy: mesh traffic is never passed through in plaintext.
    @Test func theMeshComesBeforeEgress() throws {
        let wide = ProxyConfiguration.Route(
            listen: nil,
            match: [.init(network: try IPNetwork(parsing: "0.0.0.0/0"), port: nil)],
            service: "catchall.shop",
            port: 80,
            endpoints: [.init(address: HostPort(host: "10.0.0.1", port: 15008), identity: try .init("spiffe://t/x"))]
        )
        func decide(_ host: String, _ port: Int) throws -> CaptureDecision {
            CaptureDecision.decide(
                try SocketAddress(ipAddress: host, port: port),
                listener: nil,
                virtualService: Self.virtualService,
                routes: CaptureRoutes([(wide, EndpointRotation(wide.endpoints))]),
                egress: Self.egress
            )
        }
        guard case .meshService = try decide("240.0.0.7", 80) else { Issue.record("virtual IP not first"); return }
        guard case .route = try decide("203.0.113.9", 443) else { Issue.record("egress before a route"); return }
    }
}
