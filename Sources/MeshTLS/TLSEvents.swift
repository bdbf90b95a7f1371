import MeshIdentity

/// Why a mutual-TLS handshake failed. The reason codes are stable (logs, metrics).
public struct TLSHandshakeError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Reason: String, Sendable, Hashable, CaseIterable {
        case noCertificate = "no_certificate"
        case unknownCA = "unknown_ca"
        case expired = "expired"
        case notYetValid = "not_yet_valid"
        case nameConstraints = "name_constraints"
        case invalidChain = "invalid_chain"
        case noURISAN = "no_uri_san"
        case multipleURISANs = "multiple_uri_sans"
        case invalidSpiffeID = "invalid_spiffe_id"
        case caAsLeaf = "ca_as_leaf"
        case badKeyUsage = "bad_key_usage"
        case foreignTrustDomain = "foreign_trust_domain"
        case unexpectedIdentity = "unexpected_identity"
        /// The peer did not agree on ALPN `beemesh/1`.
        case alpn = "alpn"
        /// The peer offered no TLS 1.3.
        case protocolVersion = "protocol_version"
        /// The peer refused us with an alert (see the detail for which).
        case peerAlert = "peer_alert"
        /// Malformed TLS, or any other library failure.
        case protocolError = "protocol_error"
        case timeout = "handshake_timeout"
        /// The connection closed before the handshake finished.
        case closed = "closed_during_handshake"
    }

    public let reason: Reason
    public let detail: String

    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    init(_ failure: VerificationFailure) {
        // The two enums share their raw values for every certificate reason.
        self.init(Reason(rawValue: failure.reason.rawValue) ?? .invalidChain, failure.detail)
    }

    public var description: String { "\(reason.rawValue): \(detail)" }
}

/// An error after the handshake: the TLS stream itself went wrong.
public struct TLSStreamError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Reason: String, Sendable, Hashable {
        /// TCP closed without close_notify: the data may have been cut short by an attacker.
        case truncated = "truncated"
        case protocolError = "protocol_error"
    }

    public let reason: Reason
    public let detail: String

    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { "\(reason.rawValue): \(detail)" }
}

/// Fired inbound by `MeshTLSHandler` once the peer is authenticated.
public struct TLSHandshakeCompleted: Sendable, Hashable {
    /// The peer's SPIFFE ID, verified by chain and X.509-SVID rules.
    public let peer: SpiffeID
    /// e.g. `TLSv1.3`.
    public let protocolVersion: String
    /// e.g. `TLS_AES_128_GCM_SHA256`.
    public let cipher: String
}
