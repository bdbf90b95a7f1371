import ArgumentParser
import Foundation
import Logging
import Proxy
import ServiceLifecycle

@main
struct BeeMeshProxy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "beemesh-proxy",
        abstract: "The BeeMesh sidecar: mutual TLS between workload identities for a pod's traffic.",
        subcommands: [Run.self]
    )

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the sidecar until SIGTERM or SIGINT, then drain."
        )

        @Option(help: "YAML configuration file (fields and defaults: see the README).")
        var config: String

        func run() async throws {
            let configuration: ProxyConfiguration
            do {
                configuration = try ProxyConfiguration.load(path: config)
            } catch {
                FileHandle.standardError.write(Data("beemesh-proxy: invalid configuration: \(error)\n".utf8))
                throw ExitCode(2)
            }
            let level = configuration.logLevel
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
            let logger = Logger(label: "beemesh-proxy")
            let server: ProxyServer
            do {
                server = try ProxyServer(configuration: configuration, logger: logger)
            } catch {
                logger.critical("cannot load the workload identity", metadata: ["error": "\(error)"])
                throw ExitCode(3)
            }
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: [.init(service: server)],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    logger: logger
                )
            )
            try await group.run()
        }
    }
}
