import ArgumentParser
import KademliaSimulation

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

    func run() {
        var configuration = Simulation.Configuration()
        configuration.nodes = nodes
        configuration.seed = seed
        configuration.loss = loss
        configuration.lookups = lookups
        configuration.records = records
        print(Simulation(configuration).run().rendered(configuration))
    }
}
