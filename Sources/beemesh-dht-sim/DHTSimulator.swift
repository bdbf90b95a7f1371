import ArgumentParser
import Kademlia
import KademliaSimulation
import MeshIdentity

/// `beemesh-dht-sim`: the deterministic Kademlia simulator (`tools/bench dht`).
@main
struct DHTSimulator: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "beemesh-dht-sim",
        abstract: "Run N Kademlia nodes on virtual time and print lookup success, hops, messages and table accuracy."
    )

    @Option(help: "Nodes.") var nodes = 2000
    @Option(help: "Seed: the same seed gives the same output.") var seed: UInt64 = 1
    @Option(help: "Share of messages lost (0-1).") var loss = 0.01
    @Option(help: "Node lookups measured per phase.") var lookups = 1000
    @Option(help: "Records published before a third of the nodes leave.") var records = 200
    @Option(
        help: """
            Instead: the publishing load, with this many service records per node \
            (30 s TTL, republished every 10 s; first publishes spread over 5 min), \
            measured for 60 s of virtual time.
            """
    )
    var recordsPerNode: Int?

    func run() throws {
        var configuration = Simulation.Configuration()
        configuration.nodes = nodes
        configuration.seed = seed
        configuration.loss = loss
        configuration.lookups = lookups
        configuration.records = records
        guard let recordsPerNode else {
            print(Simulation(configuration).run().rendered(configuration))
            return
        }
        var load = Simulation.LoadConfiguration()
        load.recordsPerNode = recordsPerNode
        let report = Simulation(configuration).runPublishingLoad(load)
        print(report.rendered(bytesPerStore: try Self.realStoreSize()))
    }

    /// The size on the wire of one store message carrying a real signed service record
    /// (a P-256 workload key, its certificate and the trust domain's root).
    static func realStoreSize() throws -> Int {
        let root = try CertificateAuthority.createRoot(trustDomain: try TrustDomain("mesh.example"))
        let credentials = try root.issueWorkload(try SpiffeID("spiffe://mesh.example/ns/shop/sa/orders"))
        let record = ServiceRecord(
            service: "orders",
            namespace: "shop",
            endpoint: "192.168.50.12:31007",
            ports: [8080],
            spiffeID: "spiffe://mesh.example/ns/shop/sa/orders",
            sequence: 1_765_000_000_000,
            expires: 1_765_000_030_000_000_000
        )
        let signed = try SignedServiceRecord.sign(record, with: credentials)
        let from = Contact(id: NodeID(1, 2, 3, 4), address: "192.168.50.12:7946")
        return WireCodec.encode(Envelope(from: from, requestID: 1, message: .store(signed.dhtRecord))).count
    }
}
