import Logging
import MeshNet
import ServiceLifecycle

/// What `beemesh-proxy run` and `beemesh-agent run` do around their service: logging
/// to standard error at the configured level, then the service until SIGTERM or
/// SIGINT starts its graceful shutdown.
public enum ProcessMain {
    /// Bootstraps swift-log once for the process; returns the process's logger.
    public static func logger(_ label: String, level: Logger.Level) -> Logger {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: label)
    }

    /// Writes `message` and a newline to standard error, before logging is set up (a
    /// configuration that does not load).
    public static func printError(_ message: String) {
        _ = SystemFile.writeAll(Array((message + "\n").utf8), to: 2)
    }

    /// Runs `service` until a graceful shutdown signal, then lets it finish.
    public static func run(_ service: some Service, logger: Logger) async throws {
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: [.init(service: service)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        try await group.run()
    }
}
