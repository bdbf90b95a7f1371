import Capture
import MeshConfiguration
import MeshNet
import NIOCore
import Testing

@testable import Proxy

/// Which route a captured connection takes, by the destination the app dialled.
@Suite struct CaptureRoutesTests {
    private func route(_ service: String, _ matches: [(String, UInt16?)]) throws -> ProxyConfiguration.Route {
        ProxyConfiguration.Route(
            listen: nil,
            match: try matches.map { .init(network: try IPNetwork(parsing: $0.0), port: $0.1) },
            service: service,
            port: 80,
            endpoints: [.init(address: HostPort(host: "10.0.0.1", port: 15008), identity: try .init("spiffe://t/x"))]
        )
    }

    @Test func mostSpecificMatchWins() throws {
        let routes = [
            try route("wide.default", [("10.96.0.0/16", nil)]),
            try route("host.default", [("10.96.0.12", nil)]),
            try route("hostport.default", [("10.96.0.12", 9090)]),
            try route("v6.default", [("fd00:96::/64", 443)]),
        ]
        let table = CaptureRoutes(routes.map { ($0, EndpointRotation($0.endpoints)) })
        func service(_ host: String, _ port: Int) throws -> String? {
            table.route(for: try SocketAddress(ipAddress: host, port: port))?.route.service
        }
        #expect(try service("10.96.0.12", 9090) == "hostport.default")
        #expect(try service("10.96.0.12", 80) == "host.default")
        #expect(try service("10.96.3.4", 80) == "wide.default")
        #expect(try service("fd00:96::7", 443) == "v6.default")
        #expect(try service("fd00:96::7", 80) == nil)
        #expect(try service("10.97.0.1", 80) == nil)
    }
}
