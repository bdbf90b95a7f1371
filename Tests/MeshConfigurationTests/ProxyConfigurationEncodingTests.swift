import Foundation
import MeshConfiguration
import MeshIdentity
import MeshNet
import Testing

/// The agent writes every sidecar's configuration by encoding a `ProxyConfiguration`,
/// and `GET /config` shows one the same way: what is encoded must read back as the same
/// value, for every field, including those that are off and those that are durations.
@Suite struct ProxyConfigurationEncodingTests {
    static func roundTrip(_ configuration: ProxyConfiguration) throws -> (ProxyConfiguration, String) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let text = String(decoding: try encoder.encode(configuration), as: UTF8.self)
        return (try ProxyConfiguration.parse(yaml: text, file: "encoded.json"), text)
    }

    static let identity = ProxyConfiguration.Identity(
        certificate: "/id/cert.pem",
        privateKey: "/id/key.pem",
        trustBundle: "/id/bundle.pem"
    )

    @Test func theDefaultsReadBackAsTheDefaults() throws {
        let configuration = ProxyConfiguration(identity: Self.identity)
        let (decoded, text) = try Self.roundTrip(configuration)
        #expect(decoded == configuration, "\(text)")
    }

    /// Every field away from its default: each one that the encoding dropped or wrote in
    /// a form the reader takes differently would show here.
    @Test func everyFieldReadsBack() throws {
        var configuration = ProxyConfiguration(identity: Self.identity)
        configuration.identity.reloadInterval = 0.25
        configuration.inbound.listen = HostPort(host: "::", port: 25008)
        configuration.inbound.services = ["orders.default"]
        configuration.inbound.ports = [8080, 9090]
        configuration.inbound.appAddress = "127.0.0.2"
        configuration.inbound.maxUnauthenticated = 10
        configuration.inbound.maxUnauthenticatedPerSource = 3
        configuration.routes = [
            .init(
                listen: HostPort(host: "127.0.0.1", port: 7000),
                match: [.init(network: try IPNetwork(parsing: "10.0.0.0/8"), port: 80)],
                service: "orders.default",
                port: 8080,
                endpoints: [
                    .init(
                        address: HostPort(host: "10.0.0.2", port: 15008),
                        identity: try SpiffeID("spiffe://example.org/ns/default/sa/orders")
                    )
                ]
            )
        ]
        configuration.capture = .init(
            outbound: [HostPort(host: "127.0.0.1", port: 15001)],
            inbound: [HostPort(host: "::", port: 15006)]
        )
        configuration.workload = .init(namespace: "shop", labels: ["app": "orders", "tier": "api"])
        configuration.policies.directory = "/p"
        configuration.policies.httpPorts = [8080]
        configuration.admin.listen = nil
        configuration.admin.socket = nil
        configuration.metrics.listen = nil
        configuration.flows.capacity = 12
        configuration.flows.record = false
        configuration.flows.recordQuery = true
        configuration.timeouts.connect = 0.000_01
        configuration.timeouts.nextEndpoint = 0.1
        configuration.timeouts.ejection = 4
        configuration.timeouts.handshake = 3
        configuration.timeouts.firstByte = 0.5
        configuration.timeouts.preface = 2
        configuration.timeouts.idle = 600
        configuration.timeouts.drain = 0
        configuration.discovery.agent = "/var/run/beemesh-agent/agent.sock"
        configuration.discovery.cacheTTL = 7
        var publish = ProxyConfiguration.Publish(service: "orders.shop")
        publish.endpoint = HostPort(host: "10.88.0.7", port: 15008)
        publish.ports = [8080]
        publish.weight = 7
        publish.ttl = 45
        configuration.discovery.publish = publish
        configuration.dns.listen = [HostPort(host: "127.0.0.1", port: 5353)]
        configuration.dns.suffix = "corp"
        configuration.dns.upstreams = [HostPort(host: "10.0.0.53", port: 53)]
        configuration.dns.resolvConf = "/r"
        configuration.dns.ttl = 9
        configuration.workers = 3
        configuration.workloadAPI.listen = HostPort(host: "127.0.0.1", port: 15020)
        configuration.workloadAPI.socket = "/var/run/beemesh-agent/workload.sock"
        configuration.relayEngine = .channel
        configuration.logLevel = .trace
        let (decoded, text) = try Self.roundTrip(configuration)
        #expect(decoded == configuration, "\(text)")
        #expect(text.contains("\"listen\" : \"off\"") && text.contains("\"reloadInterval\" : \"0.25s\""), "\(text)")
        #expect(text.contains("\"connect\" : \"0.00001s\"") && text.contains("\"idle\" : \"600s\""), "\(text)")
    }

    /// Mesh DNS has three states: by default (nil) on when there is an agent, a list of
    /// listeners, or none (`off`); none reads back as none, with or without an agent.
    @Test(arguments: [nil, "/agent.sock"])
    func meshDNSOffReadsBackAsOff(agent: String?) throws {
        var configuration = ProxyConfiguration(identity: Self.identity)
        configuration.discovery.agent = agent
        configuration.dns.listen = []
        let (decoded, text) = try Self.roundTrip(configuration)
        #expect(decoded == configuration && decoded.dnsListeners.isEmpty, "\(text)")
    }
}
