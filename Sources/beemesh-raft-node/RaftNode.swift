import ArgumentParser
import Dispatch
import Foundation
import Logging
import MeshConfiguration
import MeshIdentity
import NIOCore
import NIOHTTP1
import NIOPosix
import Raft
import RaftHost

/// `beemesh-raft-node`: one Raft member outside the agent, and the load generator that
/// `tools/bench raft` drives it and etcd with. Not shipped: the agent hosts the groups
/// in production (`RaftGroups`); this runs the same `RaftGroupHost`, `RaftTransport`
/// and workload API handler, with the group's members given on the command line.
@main
struct RaftNode: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "beemesh-raft-node",
        abstract: "A Raft member of one group for the benchmark, and its load generator.",
        subcommands: [Identity.self, Serve.self, Load.self]
    )

    struct Node: ParsableArguments {
        @Option(help: "A node CA directory (beectl ca intermediate).") var ca: String
        @Option(help: "The node's name: its identity is spiffe://<trust-domain>/node/<name>.") var name: String
        @Option(help: "Where the node's key and the group's log live.") var state: String

        /// The node's credentials, over a key kept in the state directory (so the
        /// member ID stays the same).
        func credentials() throws -> WorkloadCredentials {
            let authority = try CertificateAuthority.load(directory: ca)
            let keyPath = state + "/node.key"
            let key: PrivateKey
            if FileManager.default.fileExists(atPath: keyPath) {
                key = try PrivateKey(pem: try PEMFile.read(keyPath))
            } else {
                key = try PrivateKey.generateP256()
                try PEMFile.createDirectory(state)
                try PEMFile.write(keyPath, key.pemEncoded, mode: 0o600)
            }
            return try authority.issueWorkload(
                try SpiffeID("spiffe://\(authority.trustDomain.name)/node/\(name)"),
                key: key
            )
        }
    }

    struct Identity: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "id",
            abstract: "Print the node's member ID (making its key if needed)."
        )
        @OptionGroup var node: Node

        func run() throws {
            print(RaftGroupHost.hex(RaftTransport.memberID(publicKey: try node.credentials().key.publicKeyDER)))
        }
    }

    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the member until SIGTERM: Raft between members, the workload API on HTTP."
        )
        @OptionGroup var node: Node
        @Option(help: "Where the other members dial this one.") var raft: String
        @Option(help: "The workload API (/v1/kv, /v1/leader), plain HTTP.") var http: String
        @Option(help: "Every member of the group, this one too: ID=HOST:PORT.") var member: [String]
        @Option(help: "Heartbeat, milliseconds.") var heartbeat = 100
        @Option(help: "Election timeout, milliseconds (randomized up to twice).") var electionTimeout = 1000

        func run() throws {
            let logger = Logger(label: "beemesh-raft-node")
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
            let loop = group.next()
            let transport = try RaftTransport(loop: loop, credentials: try node.credentials(), logger: logger)
            var peers: [(RaftID, HostPort)] = []
            for text in member {
                let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2, let id = UInt64(parts[0], radix: 16), let address = HostPort(parts[1]) else {
                    throw ValidationError("'\(text)' is not ID=HOST:PORT")
                }
                peers.append((id, address))
            }
            guard let raftAddress = HostPort(raft), let httpAddress = HostPort(http) else {
                throw ValidationError("--raft and --http are HOST:PORT")
            }
            var settings = RaftGroupHost.Settings(id: transport.localID)
            settings.raft.heartbeatInterval = UInt64(heartbeat) * 1_000_000
            settings.raft.electionTimeoutMin = UInt64(electionTimeout) * 1_000_000
            settings.raft.electionTimeoutMax = 2 * settings.raft.electionTimeoutMin
            let host = try RaftGroupHost(
                group: "bench/kv",
                directory: node.state + "/group",
                settings: settings,
                bootstrap: Membership(voters: peers.map(\.0)),
                sink: transport,
                loop: loop,
                logger: logger
            )
            let members = peers
            try loop.flatSubmit {
                for (id, address) in members { transport.setAddress(address, of: id) }
                transport.register(host)
                host.start()
                return transport.listen(on: raftAddress).map { _ in }
            }.wait()
            let binding = WorkloadAPIHandler.Binding(group: "bench/kv", ordinal: 0)
            _ = try ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(
                            WorkloadAPIHandler(
                                lookup: { name in loop.makeSucceededFuture(name == host.group ? host : nil) },
                                binding: binding,
                                logger: logger
                            )
                        )
                    }
                }
                .bind(host: httpAddress.host, port: httpAddress.port).wait()
            logger.info("member up", metadata: ["id": "\(RaftGroupHost.hex(transport.localID))", "http": "\(http)"])
            signal(SIGTERM, SIG_IGN)
            let stop = DispatchSource.makeSignalSource(signal: SIGTERM)
            stop.setEventHandler {
                try? loop.submit { host.stop() }.wait()
                Foundation.exit(0)
            }
            stop.resume()
            dispatchMain()
        }
    }

    struct Load: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write (or read) for a while with N concurrent clients, one connection each; print JSON.",
            discussion: """
                beemesh: the workload API (PUT/GET /v1/kv/KEY, HTTP/1.1 keep-alive). etcd: its gRPC API \
                (KV/Put, KV/Range, linearizable), over HTTP/2 by hand. Each client has one request in \
                flight; keys cycle through 1,000 per client; values are 256 bytes.
                """
        )
        @Option(help: "beemesh or etcd.") var system: String
        @Option(help: "HOST:PORT of the member to load (the leader).") var endpoint: String
        @Option(help: "Concurrent clients.") var clients = 1
        @Option(help: "Seconds of load.") var seconds = 5.0
        @Flag(help: "Linearizable reads of keys written before, instead of writes.") var reads = false

        func run() throws {
            guard let target = HostPort(endpoint), system == "beemesh" || system == "etcd" else {
                throw ValidationError("--system beemesh|etcd, --endpoint HOST:PORT")
            }
            let result = try LoadGenerator(
                system: system == "etcd" ? .etcd : .beemesh,
                target: target,
                clients: clients,
                seconds: seconds,
                reads: reads
            ).run()
            print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
        }
    }
}
