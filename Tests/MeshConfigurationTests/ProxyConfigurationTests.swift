import MeshConfiguration
import Testing

@Suite struct ProxyConfigurationTests {
    let identity = """
        identity:
          certificate: /id/cert.pem
          privateKey: /id/key.pem
          trustBundle: /id/bundle.pem

        """

    @Test func defaults() throws {
        let configuration = try ProxyConfiguration.parse(yaml: identity, file: "proxy.yaml")
        #expect(configuration.inbound.listen == HostPort(host: "0.0.0.0", port: 15008))
        #expect(configuration.inbound.appAddress == "127.0.0.1")
        #expect(configuration.inbound.ports.isEmpty)
        #expect(configuration.routes.isEmpty)
        #expect(configuration.timeouts.connect == 5)
        #expect(configuration.timeouts.nextEndpoint == 0.25)
        #expect(configuration.timeouts.ejection == 1)
        #expect(configuration.timeouts.handshake == 10)
        #expect(configuration.timeouts.idle == 3600)
        #expect(configuration.timeouts.drain == 30)
        #expect(configuration.identity.reloadInterval == 1)
        #expect(configuration.workers == 1)
        #expect(configuration.relayEngine == .direct)
        #expect(configuration.logLevel == .info)
    }

    @Test func fullConfiguration() throws {
        let yaml =
            identity + """
                inbound:
                  listen: "[::]:25008"
                  services: [orders.default]
                  ports: [8080, 9090]
                routes:
                  - listen: 127.0.0.1:7000
                    service: orders.default
                    port: 8080
                    endpoints:
                      - {address: 10.0.0.2:15008, identity: spiffe://example.org/ns/default/sa/orders}
                timeouts: {connect: 2s, handshake: 3s, preface: 1s, idle: 10m, drain: 0s}
                workers: 2
                relayEngine: channel
                logLevel: debug
                """
        let configuration = try ProxyConfiguration.parse(yaml: yaml, file: "proxy.yaml")
        #expect(configuration.inbound.listen == HostPort(host: "::", port: 25008))
        #expect(configuration.inbound.ports == [8080, 9090])
        #expect(configuration.routes.first?.endpoints.first?.identity.serviceAccount == "orders")
        #expect(configuration.timeouts.idle == 600)
        #expect(configuration.timeouts.drain == 0)
        #expect(configuration.workers == 2)
        #expect(configuration.relayEngine == .channel)
    }

    @Test(arguments: [
        ("inbound: {listen: nowhere}", "proxy.yaml:5: inbound.listen: 'nowhere' is not host:port"),
        ("timeouts: {idle: forever}", "proxy.yaml:5: timeouts.idle: 'forever' is not a duration"),
        ("colour: blue", "proxy.yaml:5: colour: unknown field"),
        ("workers: 0", "proxy.yaml:5: workers: must be between 1 and 64"),
        ("relayEngine: splice", "proxy.yaml:5: relayEngine: unknown relay engine 'splice' (direct or channel)"),
        ("logLevel: loud", "proxy.yaml:5: logLevel: unknown level 'loud'"),
        (
            "routes:\n  - {listen: 127.0.0.1:1, service: a.b, port: 1, endpoints: [{address: 1.2.3.4:5, identity: spiffe://X/y}]}",
            "proxy.yaml:6: routes[0].endpoints[0].identity: spiffe://X/y: trust domain may hold only"
        ),
        (
            "routes:\n  - {listen: 127.0.0.1:1, service: Orders, port: 1, endpoints: [{address: 1.2.3.4:5, identity: spiffe://x/y}]}",
            "proxy.yaml:6: routes[0].service:"
        ),
        ("inbound: {ports: [0]}", "proxy.yaml:5: inbound.ports[0]: port must be 1-65535"),
        ("inbound: {ports: [\"1:30\"]}", "proxy.yaml:5: inbound.ports[0]: must be a decimal integer"),
        ("workers: 0x2", "proxy.yaml:5: workers: must be a decimal integer"),
        (
            "routes:\n  - {service: a.b, port: 1, endpoints: [{address: 1.2.3.4:5, identity: spiffe://x/y}]}",
            "proxy.yaml:6: routes[0]: a route needs a listen address, match entries, or both"
        ),
        (
            "routes:\n  - {match: [{network: 10.1.0.0/8}], service: a.b, port: 1, endpoints: [{address: 1.2.3.4:5, identity: spiffe://x/y}]}",
            "proxy.yaml:6: routes[0].match[0].network: '10.1.0.0/8' has host bits set; did you mean 10.0.0.0/8?"
        ),
        (
            "routes:\n  - {match: [{network: 10.0.0.1, port: 0}], service: a.b, port: 1, endpoints: [{address: 1.2.3.4:5, identity: spiffe://x/y}]}",
            "proxy.yaml:6: routes[0].match[0].port: port must be 1-65535"
        ),
        ("capture: {outboundMode: ALLOW_ANY}", "proxy.yaml:5: capture.outboundMode: unknown field"),
        ("capture: {outbound: [localhost]}", "proxy.yaml:5: capture.outbound[0]: 'localhost' is not host:port"),
        ("discovery: {agent: agent.sock}", "proxy.yaml:5: discovery.agent: 'agent.sock' is neither a socket path"),
        ("discovery: {publish: {service: orders.default}}", "proxy.yaml:5: discovery.publish: publishing needs"),
        (
            "discovery: {agent: /a.sock, publish: {service: orders.default}}",
            "proxy.yaml:5: discovery.publish: other sidecars cannot dial 0.0.0.0:15008"
        ),
        (
            "discovery: {agent: /a.sock, publish: {service: orders, endpoint: 10.0.0.1:15008}}",
            "proxy.yaml:5: discovery.publish.service: 'orders' must be <name>.<namespace>"
        ),
        (
            "discovery: {agent: /a.sock, publish: {service: o.d, endpoint: 10.0.0.1:1, ttl: 1s}}",
            "proxy.yaml:5: discovery.publish.ttl: at least 3s"
        ),
        ("dns: {listen: [127.0.0.1:53]}", "proxy.yaml:5: dns.listen: mesh DNS needs discovery.agent"),
        ("dns: {suffix: .mesh}", "proxy.yaml:5: dns.suffix: '.mesh' is not a domain suffix"),
        ("dns: {upstreams: [resolver]}", "proxy.yaml:5: dns.upstreams[0]: 'resolver' is not an address"),
    ])
    func errorsNameFileLineAndField(_ extra: String, _ expected: String) {
        #expect {
            try ProxyConfiguration.parse(yaml: identity + extra, file: "proxy.yaml")
        } throws: { error in
            let text = "\(error)"
            return text.hasPrefix(expected)
                ? true
                : {
                    print("got: \(text)"); return false
                }()
        }
    }

    @Test func discoveryAndMeshDNS() throws {
        let plain = try ProxyConfiguration.parse(yaml: identity, file: "proxy.yaml")
        #expect(plain.discovery.agent == nil && plain.dnsListeners.isEmpty, "no agent, no DHT and no mesh DNS")
        let configuration = try ProxyConfiguration.parse(
            yaml: identity + """
                inbound: {listen: 10.0.0.5:15008, ports: [8080]}
                discovery:
                  agent: /var/run/beemesh/agent.sock
                  publish: {service: orders.default, weight: 50}
                  cacheTTL: 2s
                dns: {upstreams: [10.0.0.53, "[fd00::53]:5353"], suffix: Mesh.Internal}
                """,
            file: "proxy.yaml"
        )
        #expect(configuration.discovery.publish?.endpoint == nil && configuration.discovery.publish?.weight == 50)
        #expect(configuration.discovery.publish?.ttl == 30 && configuration.discovery.cacheTTL == 2)
        #expect(configuration.dnsListeners == [HostPort(host: "127.0.0.1", port: 15053)])
        #expect(configuration.dns.upstreams.map(\.description) == ["10.0.0.53:53", "[fd00::53]:5353"])
        #expect(configuration.dns.suffix == "mesh.internal" && configuration.dns.ttl == 5)
        let off = try ProxyConfiguration.parse(
            yaml: identity + "discovery: {agent: http://127.0.0.1:15020}\ndns: {listen: off}",
            file: "proxy.yaml"
        )
        #expect(off.dnsListeners.isEmpty)
    }

    @Test func identityIsRequired() {
        #expect {
            try ProxyConfiguration.parse(yaml: "workers: 1", file: "p.yaml")
        } throws: { "\($0)".contains("identity: is required") }
    }

    @Test func notYAML() {
        #expect(throws: ConfigurationError.self) { try ProxyConfiguration.parse(yaml: "a: [b", file: "p.yaml") }
    }
}
