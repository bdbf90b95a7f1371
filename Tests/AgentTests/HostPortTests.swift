import Foundation
import MeshTestSupport
import Testing

@testable import Agent

/// Host ports: one per published pod, kept across restarts and replacements, freed
/// when the pod goes; and the configuration and manifest fields that go with them.
@Suite struct HostPortTests {
    @Test func aPodKeepsItsPortAndAFreedPortIsGivenAgain() {
        var table = HostPortTable(range: 30000...30002)
        #expect(table.port(for: "a.default", usable: { _ in true }) == 30000)
        #expect(
            table.port(for: "b.default", usable: { $0 != 30001 }) == 30002,
            "a port held by something else is skipped"
        )
        #expect(table.port(for: "a.default", usable: { _ in false }) == 30000, "a pod keeps the port it has")
        #expect(table.port(for: "c.default", usable: { _ in true }) == 30001)
        #expect(table.port(for: "d.default", usable: { _ in true }) == nil, "the range is full")
        #expect(table.keep(only: ["a.default", "c.default"]) == ["b.default"])
        #expect(table.port(for: "d.default", usable: { _ in true }) == 30002, "a freed port is given again")
        #expect(table.keep(only: ["a.default"]) == ["c.default", "d.default"])
        table.adopt("e.default", port: 31234)
        #expect(table.assigned == ["a.default": 30000, "e.default": 31234], "podman's port, even outside the range")
    }

    @Test func theTableSurvivesARestartAndARangeChangeKeepsRunningPodsPorts() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hostports-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/host-ports.json"
        #expect(try HostPortTable.load(path: path, range: 30000...30010).assigned.isEmpty, "no file: empty")
        var table = HostPortTable(range: 30000...30010)
        _ = table.port(for: "a.default", usable: { _ in true })
        _ = table.port(for: "b.default", usable: { _ in true })
        try table.save(path: path)
        #expect(try HostPortTable.load(path: path, range: 30000...30010) == table)
        var narrowed = try HostPortTable.load(path: path, range: 30005...30010)
        #expect(narrowed.assigned == table.assigned, "the pods run with their ports")
        #expect(narrowed.port(for: "c.default", usable: { _ in true }) == 30005, "new ones come from the new range")
        try "{not json".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: HostPortTableUnreadable.self) { try HostPortTable.load(path: path, range: 30000...30010) }
    }

    @Test func aBoundPortIsNotBindable() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        let port = UInt16(try bindLoopback(listener, listening: 1))
        #expect(!HostPortTable.bindable(host: "127.0.0.1", port: port))
        #expect(!HostPortTable.bindable(host: "", port: port), "a wildcard bind collides with it too")
    }

    @Test func podsArePublishedOnHostPortsUnlessTheAddressIsLoopbackOrThePortsAreOff() throws {
        func pods(_ yaml: String) throws -> AgentConfiguration.Pods? {
            try AgentConfiguration.parse(
                yaml: "node: {name: n, ca: /ca}\ndht: {listen: 10.0.0.5:15010}\n" + yaml,
                file: "agent.yaml"
            ).pods
        }
        let defaults = try pods("pods: {}")
        #expect(defaults?.published(dhtHost: "10.0.0.5")?.host == "10.0.0.5")
        #expect(defaults?.published(dhtHost: "10.0.0.5")?.ports == 30000...32767)
        #expect(defaults?.published(dhtHost: "127.0.0.1") == nil, "no other node can dial a loopback address")
        let explicit = try pods("pods: {advertise: 192.0.2.7, hostPorts: 31000-31099}")
        #expect(explicit?.published(dhtHost: "10.0.0.5")?.host == "192.0.2.7")
        #expect(explicit?.published(dhtHost: "10.0.0.5")?.ports == 31000...31099)
        #expect(try pods("pods: {hostPorts: off}")?.published(dhtHost: "10.0.0.5") == nil)
        #expect(
            performing: {
                try AgentConfiguration.parse(
                    yaml:
                        "node: {name: n, ca: /ca}\ndht: {listen: 0.0.0.0:15010, advertise: node-a.lan:15010}\npods: {}",
                    file: "agent.yaml"
                )
            },
            throws: { "\($0)".contains("set pods.advertise") }
        )
        for (yaml, message) in [
            ("pods: {hostPorts: 32000-31000}", "is not a port range"),
            ("pods: {hostPorts: 0-10}", "is not a port range"),
            ("pods: {advertise: 0.0.0.0}", "is not an address (an IP) other nodes can dial"),
            ("pods: {advertise: node-a}", "is not an address (an IP) other nodes can dial"),
            ("pods: {advertise: 10.0.0.5/24}", "is not an address (an IP) other nodes can dial"),
        ] {
            #expect(performing: { try pods(yaml) }, throws: { "\($0)".contains(message) })
        }
    }

    @Test func aTemplateNamingANodeRunsOnThatNodeOnly() throws {
        let workloads = try KubernetesObject.parse(
            yaml: """
                apiVersion: v1
                kind: Pod
                metadata: {name: pinned}
                spec:
                  nodeName: node-2
                  containers: [{name: app, image: localhost/app:1}]
                ---
                apiVersion: v1
                kind: Pod
                metadata: {name: anywhere}
                spec:
                  containers: [{name: app, image: localhost/app:1}]
                """,
            file: "pods.yaml"
        )
        #expect(DesiredPod.plan(workloads, node: "node-1").map(\.name) == ["anywhere"])
        #expect(DesiredPod.plan(workloads, node: "node-2").map(\.name) == ["anywhere", "pinned"])
        #expect(DesiredPod.plan(workloads).count == 2, "names collide whichever node runs them")
        #expect(
            performing: {
                try KubernetesObject.parse(
                    yaml: "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: Node_2\n"
                        + "  containers: [{name: app, image: localhost/app:1}]\n",
                    file: "p.yaml"
                )
            },
            throws: { "\($0)".contains("p.yaml:5") && "\($0)".contains("not a valid name") }
        )
    }
}
