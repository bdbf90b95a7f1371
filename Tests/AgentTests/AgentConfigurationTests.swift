import Agent
import Foundation
import Testing

@Suite struct AgentConfigurationTests {
    @Test func aFullConfigurationReadsBackWithDefaultsFilledIn() throws {
        let configuration = try AgentConfiguration.parse(
            yaml: """
                node: {name: node-a, ca: /etc/beemesh/node-ca}
                dht:
                  listen: 0.0.0.0:15010
                  advertise: 10.0.0.5:15010
                  bootstrap: [10.0.0.6:15010, "[fd00::7]:15010"]
                  requestTimeout: 500ms
                api: {socket: off, listen: 127.0.0.1:15020}
                raft: {listen: 10.0.0.5:15012, heartbeat: 50ms, electionTimeout: 500ms, snapshotEvery: 500}
                logLevel: DEBUG
                """,
            file: "agent.yaml"
        )
        #expect(configuration.node.name == "node-a" && configuration.node.stateDirectory == "/var/lib/beemesh")
        #expect(configuration.dht.advertised.description == "10.0.0.5:15010")
        #expect(configuration.dht.bootstrap.map(\.description) == ["10.0.0.6:15010", "[fd00::7]:15010"])
        #expect(configuration.dht.requestTimeout == 0.5 && configuration.dht.maintenanceInterval == 60)
        #expect(configuration.api.socket == nil && configuration.api.listen?.port == 15020)
        #expect(configuration.logLevel == .debug, "levels are read as the proxy reads them, in any case")
        #expect(configuration.raft.listen?.description == "10.0.0.5:15012" && configuration.raft.heartbeat == 0.05)
        #expect(configuration.raft.electionTimeout == 0.5 && configuration.raft.snapshotEvery == 500)
        let defaults = try AgentConfiguration.parse(
            yaml: "node: {name: a, ca: /x}\ndht: {listen: 127.0.0.1:1}",
            file: "a"
        )
        #expect(defaults.raft.listen == nil, "Raft's listener is off until groups span nodes")
        #expect(
            defaults.raft.heartbeat == 0.1 && defaults.raft.electionTimeout == 1
                && defaults.raft.snapshotEvery == 10_000
        )
    }

    @Test func accessGrantsNameUsersAndGroupsByNameOrNumber() throws {
        let configuration = try AgentConfiguration.parse(
            yaml: """
                node: {name: node-a, ca: /ca}
                dht: {listen: 127.0.0.1:15010}
                api:
                  socketGroup: nogroup
                  access:
                    - {group: "0", admin: true}
                    - {user: nobody, namespaces: [shop], serviceAccounts: [frontend, orders]}
                    - {user: "1000", namespaces: ["*"], serviceAccounts: ["*"]}
                """,
            file: "agent.yaml"
        )
        #expect(configuration.api.socketGroup == 65534)
        #expect(
            configuration.api.access.grants == [
                .init(subject: .group(0), admin: true),
                .init(subject: .user(65534), namespaces: ["shop"], serviceAccounts: ["frontend", "orders"]),
                .init(subject: .user(1000), namespaces: ["*"], serviceAccounts: ["*"]),
            ]
        )
    }

    @Test func theDeployExampleParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let configuration = try AgentConfiguration.load(path: root.path + "/deploy/agent.example.yaml")
        #expect(configuration.dht.advertised.description == "10.0.0.5:15010")
        #expect(configuration.pods?.sidecarImage == "localhost/beemesh-proxy:latest")
        #expect(configuration.pods?.podmanSocket == "/run/podman/podman.sock")
        #expect(configuration.api.socket == "/var/run/beemesh/agent/agent.sock")
    }

    @Test(arguments: [
        ("node: {name: Node_A, ca: /x}\ndht: {listen: 127.0.0.1:1}", 1, "node.name"),
        ("node: {name: a, ca: /x}\ndht: {listen: 0.0.0.0:15010}", 2, "dht.listen"),
        ("node: {name: a, ca: /x}\ndht: {listen: 127.0.0.1:1, advertise: 127.0.0.1:0}", 2, "dht.advertise"),
        ("node: {name: a, ca: /x}\ndht: {listen: 127.0.0.1:1}\napi: {socket: relative.sock}", 3, "api.socket"),
        ("node: {name: a, ca: /x}\ndht: {listen: 127.0.0.1:1, peers: []}", 2, "dht.peers"),
        ("node: {name: a}\ndht: {listen: 127.0.0.1:1}", 1, "node.ca"),
        (
            "node: {name: a, ca: /x}\ndht: {listen: 127.0.0.1:1}\napi: {socketGroup: no-such-group-x}", 3,
            "api.socketGroup"
        ),
        ("node: {name: a, ca: /x}\ndht: {listen: 127.0.0.1:1}\napi: {access: [{user: nobody}]}", 3, "api.access[0]"),
        (
            "node: {name: a, ca: /x}\ndht: {listen: 127.0.0.1:1}\napi: {access: [{user: nobody, group: nogroup, admin: true}]}",
            3, "api.access[0]"
        ),
        (
            "node: {name: a, ca: /x}\ndht: {listen: 127.0.0.1:1}\napi: {access: [{user: no-such-user-x, admin: true}]}",
            3, "api.access[0].user"
        ),
        (
            "node: {name: a, ca: /x}\ndht: {listen: 127.0.0.1:1}\napi: {access: [{user: nobody, namespaces: [Shop], serviceAccounts: [a]}]}",
            3, "api.access[0].namespaces"
        ),
    ])
    func mistakesNameTheirLineAndField(yaml: String, line: Int, field: String) {
        #expect {
            _ = try AgentConfiguration.parse(yaml: yaml, file: "agent.yaml")
        } throws: { error in
            "\(error)".hasPrefix("agent.yaml:\(line): \(field)")
        }
    }

    @Test(arguments: [
        ("raft: {heartbeat: 300ms}", "raft.heartbeat"),
        ("raft: {electionTimeout: 200ms}", "raft.electionTimeout"),
        ("raft: {snapshotEvery: 10}", "raft.snapshotEvery"),
        ("raft: {peers: []}", "raft.peers"),
    ])
    func raftMistakesNameTheirField(yaml: String, field: String) {
        #expect {
            _ = try AgentConfiguration.parse(
                yaml: "node: {name: a, ca: /x}\ndht: {listen: 127.0.0.1:1}\n" + yaml,
                file: "agent.yaml"
            )
        } throws: { error in
            "\(error)".hasPrefix("agent.yaml:3: \(field)")
        }
    }
}
