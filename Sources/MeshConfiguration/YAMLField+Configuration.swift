import Logging
import MeshIdentity
import Policy

/// The readers both binaries' configurations share, so that a field of one kind is
/// read, and refused, the same way in every file.
extension YAMLField {
    package func hostPort() throws(ConfigurationError) -> HostPort {
        let text = try string()
        guard let value = HostPort(text) else { throw error("'\(text)' is not host:port") }
        return value
    }

    /// `host:port`, or `off` for none.
    package func optionalHostPort() throws(ConfigurationError) -> HostPort? {
        try string() == "off" ? nil : try hostPort()
    }

    package func duration(positive: Bool) throws(ConfigurationError) -> Double {
        let text = try string()
        // Kept to the nanosecond, and at most a century: what the encoder writes back.
        guard let parsed = DurationString.parse(text), parsed <= 3_153_600_000,
            case let seconds = (parsed * 1e9).rounded() / 1e9, !positive || seconds > 0
        else {
            throw error("'\(text)' is not a duration such as 500ms, 10s, 5m, 1h (at most 100 years)")
        }
        return seconds
    }

    package func spiffeID() throws(ConfigurationError) -> SpiffeID {
        do {
            return try SpiffeID(try string())
        } catch let failure as IdentityError {
            throw error(failure.reason)
        } catch let failure as ConfigurationError {
            throw failure
        } catch {
            throw self.error("\(error)")
        }
    }

    package func serviceName() throws(ConfigurationError) -> String {
        let text = try string()
        if let problem = ServiceName.problem(text) { throw error(problem) }
        guard text.contains(".") else { throw error("'\(text)' must be <name>.<namespace>") }
        return text
    }

    /// An absolute unix socket path, or `off` for none.
    package func socketPath() throws(ConfigurationError) -> String? {
        let path = try string()
        guard path == "off" || path.hasPrefix("/") else {
            throw error("'\(path)' is not an absolute socket path (or off)")
        }
        guard path.utf8.count < 108 else { throw error("a unix socket path must be under 108 bytes") }
        return path == "off" ? nil : path
    }

    /// A swift-log level, in any case (`info`, `DEBUG`).
    package func logLevel() throws(ConfigurationError) -> Logger.Level {
        let text = try string()
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            let names = Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")
            throw error("unknown level '\(text)' (one of \(names))")
        }
        return level
    }
}
