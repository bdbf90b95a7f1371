import Agent
import ArgumentParser
import Foundation
import Logging
import MeshProcess
import ServiceLifecycle

@main
struct BeeMeshAgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "beemesh-agent",
        abstract: "The BeeMesh node agent: the DHT server and the local API of a machine's sidecars.",
        subcommands: [Run.self]
    )

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the agent until SIGTERM or SIGINT.")

        @Option(help: "YAML configuration file (fields and defaults: docs/configuration.md).")
        var config: String

        func run() async throws {
            let configuration: AgentConfiguration
            do {
                configuration = try AgentConfiguration.load(path: config)
            } catch {
                ProcessMain.printError("beemesh-agent: invalid configuration: \(error)")
                throw ExitCode(2)
            }
            let logger = ProcessMain.logger("beemesh-agent", level: configuration.logLevel)
            let server: AgentServer
            do {
                server = try AgentServer(configuration: configuration, logger: logger, metrics: MeshMetrics.registry)
            } catch {
                logger.critical("cannot start", metadata: ["error": "\(error)"])
                throw ExitCode(3)
            }
            try await ProcessMain.run(server, logger: logger)
        }
    }
}
