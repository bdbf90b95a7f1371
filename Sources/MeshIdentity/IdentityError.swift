/// An error from identity handling: a machine-checkable code and a human reason.
public struct IdentityError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, for code that reacts to it.
    public enum Code: String, Sendable, Hashable {
        case invalidSpiffeID
        case invalidPEM
        case keyMismatch
        case openSSL
        case io
        case invalidArgument
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "\(code.rawValue): \(reason)" }
}
