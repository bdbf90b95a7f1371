import Kademlia
import KademliaSimulation
import Testing

@Suite struct SimulationTests {
    @Test func twoThousandNodes() {
        var configuration = Simulation.Configuration()
        configuration.nodes = 2000
        configuration.lookups = 500
        configuration.records = 100
        let report = Simulation(configuration).run()
        print(report.rendered(configuration))
        #expect(report.successRate >= 0.999)
        #expect(report.churnSuccessRate >= 0.99)
        #expect(report.recordsFoundAfterDeparture == report.records)
        #expect(report.mergedKeys == 10 && report.mergedKeysComplete == report.mergedKeys)
        #expect(report.forgedAccepted == 0)
    }
}
