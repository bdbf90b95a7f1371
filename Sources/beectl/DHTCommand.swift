import ArgumentParser
import Foundation
import MeshAPI

/// `beectl dht`: the node agent's view of the DHT.
struct DHTCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dht",
        abstract: "Look services up in the DHT and show a node's peers, through the node agent.",
        subcommands: [Lookup.self, Peers.self]
    )

    struct AgentOptions: ParsableArguments {
        @OptionGroup var connection: AgentConnection

        @Flag(help: "JSON instead of a table.")
        var json = false

        func fetch<T: Decodable>(_ path: String, as type: T.Type) throws -> T {
            try connection.fetch(path, as: type)
        }

        func printJSON(_ value: some Encodable) throws {
            print(String(decoding: try MeshJSON.encoder(pretty: true).encode(value), as: UTF8.self))
        }
    }

    struct Lookup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The endpoints of SERVICE.NAMESPACE found in the DHT, each record checked."
        )

        @Argument(help: "NAME.NAMESPACE, e.g. orders.default (leader.NAME.NAMESPACE: a StatefulSet's leading pod).")
        var service: String

        @OptionGroup var options: AgentOptions

        func validate() throws {
            let parts = service.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 2 || (parts.count == 3 && parts[0] == "leader"), parts.allSatisfy({ !$0.isEmpty })
            else {
                throw ValidationError("'\(service)' is not NAME.NAMESPACE or leader.NAME.NAMESPACE")
            }
        }

        func run() throws {
            let lookup = try options.fetch("/dht/services/\(service)", as: ServiceLookup.self)
            if options.json { return try options.printJSON(lookup) }
            guard !lookup.endpoints.isEmpty else {
                FileHandle.standardError.write(
                    Data("beectl: no endpoint of \(service) in the DHT (\(lookup.messages) requests)\n".utf8)
                )
                throw ExitCode(1)
            }
            let rows =
                [["ENDPOINT", "PORTS", "IDENTITY", "WEIGHT", "SEQUENCE", "EXPIRES IN"]]
                + lookup.endpoints.map { endpoint in
                    [
                        endpoint.endpoint, endpoint.ports.map(String.init).joined(separator: ","),
                        endpoint.identity, "\(endpoint.weight)", "\(endpoint.sequence)",
                        "\(max(0, Int(endpoint.expires.timeIntervalSinceNow)))s",
                    ]
                }
            print(TextTable.render(rows), terminator: "")
            print("\(lookup.endpoints.count) endpoint(s); \(lookup.hops) hop(s), \(lookup.messages) request(s)")
        }
    }

    struct Peers: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The node's routing table, closest peers first.")

        @OptionGroup var options: AgentOptions

        func run() throws {
            let peers = try options.fetch("/dht/peers", as: DHTPeers.self)
            if options.json { return try options.printJSON(peers) }
            print("node \(peers.node) at \(peers.address) (\(peers.identity)), \(peers.records) record(s) held")
            print(
                TextTable.render(
                    [["PEER", "ADDRESS", "BUCKET"]] + peers.peers.map { [$0.id, $0.address, "\($0.bucket)"] }
                ),
                terminator: ""
            )
        }
    }
}
