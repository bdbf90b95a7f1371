import Foundation
import MeshConfiguration
import Proxy
import Testing

/// The example shipped in deploy/ stays a valid configuration.
@Suite struct ExampleConfigurationTests {
    @Test func deployExampleParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let configuration = try ProxyConfiguration.load(path: root.path + "/deploy/proxy.example.yaml")
        #expect(configuration.routes.first?.endpoints.count == 2)
        #expect(configuration.inbound.ports == [8080])
        #expect(configuration.routes.first?.match.map(\.port) == [9090, 9090])
        #expect(configuration.capture.outbound.count == 2)
        #expect(configuration.policies.httpPorts == [8080] && configuration.workload.labels == ["app": "orders"])
    }
}
