import ArgumentParser
import Foundation
import MeshAPI

/// `beectl raft`: the Raft groups of the StatefulSets, as the node agent hosts them.
struct RaftCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "raft",
        abstract: "Show the Raft groups of StatefulSets hosted by the node agent.",
        subcommands: [Status.self]
    )

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Members and leader, term and commit index, each member's match and lag, snapshot and log size.",
            discussion: "Without NAME, every group the agent hosts (in NAMESPACE with -n)."
        )

        @Argument(help: "The StatefulSet.") var name: String?
        @Option(name: .shortAndLong, help: "The namespace (default: every namespace without NAME, default with it).")
        var namespace: String?
        @OptionGroup var connection: AgentConnection
        @Flag(help: "JSON instead of text.") var json = false

        func run() throws {
            var query: [(name: String, value: String)] = []
            if let namespace = namespace ?? (name == nil ? nil : "default") { query.append(("namespace", namespace)) }
            if let name { query.append(("name", name)) }
            let path = "/v1/raft" + (query.isEmpty ? "" : "?" + QueryString.encode(query))
            let groups = try connection.fetch(path, as: [RaftGroupStatus].self)
            if json {
                print(String(decoding: try MeshJSON.encoder(pretty: true).encode(groups), as: UTF8.self))
                return
            }
            guard !groups.isEmpty else {
                let what = name.map { "statefulset/\($0) in \(namespace ?? "default")" } ?? "any StatefulSet"
                FileHandle.standardError.write(Data("beectl: this node hosts no Raft group for \(what)\n".utf8))
                throw ExitCode(1)
            }
            for (number, group) in groups.enumerated() {
                if number > 0 { print("") }
                print(Self.render(group), terminator: "")
            }
        }

        static func render(_ group: RaftGroupStatus) -> String {
            var text = "group \(group.group): \(group.role) at term \(group.term), leader \(group.leader ?? "none")\n"
            text += "commit \(group.commit), applied \(group.applied), last index \(group.lastIndex), "
            text += "snapshot at \(group.snapshotIndex), log \(Self.bytes(group.logBytes)), \(group.keys) key(s)\n"
            text += "workload leader \(group.workloadLeader ?? "none") (fencing revision \(group.leaderRevision))\n"
            if let failure = group.failure { text += "STOPPED: \(failure)\n" }
            text += TextTable.render(
                [["MEMBER", "VOTER", "NODE", "MATCH", "LAG"]]
                    + group.members.map { member in
                        [
                            member.id + (member.id == group.leader ? " (leader)" : ""),
                            member.voter ? "yes" : "learner",
                            member.node ?? (member.id == group.member ? group.node : ""),
                            member.match.map(String.init) ?? "-", member.lag.map(String.init) ?? "-",
                        ]
                    }
            )
            if !group.ordinals.isEmpty {
                text += TextTable.render(
                    [["ORDINAL", "NODE", "READY"]]
                        + group.ordinals.map { ["\($0.ordinal)", $0.node, $0.ready ? "yes" : "no"] }
                )
            }
            return text
        }

        static func bytes(_ count: Int) -> String {
            count < 1 << 20
                ? String(format: "%.1f KiB", Double(count) / 1024) : String(format: "%.1f MiB", Double(count) / 1048576)
        }
    }
}
