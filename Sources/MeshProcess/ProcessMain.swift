import Logging
import MeshNet
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

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

    /// Raises the soft limit of open descriptors to the hard one (a sidecar holds two
    /// per relayed connection, and 1,024 was filled by 2,000 idle peers); returns the
    /// limit in force.
    @discardableResult
    public static func raiseOpenFileLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { return UInt64(raised.rlim_cur) }
        }
        return UInt64(limit.rlim_cur)
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
