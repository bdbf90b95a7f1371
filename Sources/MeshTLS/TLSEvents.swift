import MeshIdentity

/// Why a mutual-TLS handshake failed. The labels are stable (logs, metrics).
public struct TLSHandshakeError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Reason: Hashable, Sendable {
        /// The peer's certificate or identity was refused (chain or X.509-SVID rules).
        case certificate(VerificationFailure.Reason)
        /// The peer did not agree on ALPN `beemesh/1`.
        case alpn
        /// The peer offered no TLS 1.3.
        case protocolVersion
        /// The peer refused us with an alert (see the detail for which).
        case peerAlert
        /// Malformed TLS, or any other library failure.
        case protocolError
        case timeout
        /// The connection closed before the handshake finished.
        case closed

        /// e.g. `unknown_ca`, `alpn`, `handshake_timeout`.
        public var label: String {
            switch self {
            case .certificate(let reason): reason.rawValue
            case .alpn: "alpn"
            case .protocolVersion: "protocol_version"
            case .peerAlert: "peer_alert"
            case .protocolError: "protocol_error"
            case .timeout: "handshake_timeout"
            case .closed: "closed_during_handshake"
            }
        }
    }

    public let reason: Reason
    public let detail: String

    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    init(_ failure: VerificationFailure) {
        self.init(.certificate(failure.reason), failure.detail)
    }

    public var description: String { "\(reason.label): \(detail)" }
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
public struct TLSHandshakeCompleted: Sendable {
    /// The peer's SPIFFE ID, verified by chain and X.509-SVID rules.
    public let peer: SpiffeID
    /// e.g. `TLSv1.3`.
    public let protocolVersion: String
    /// e.g. `TLS_AES_128_GCM_SHA256`.
    public let cipher: String
    /// The peer's leaf certificate, as verified.
    public let peerCertificate: Certificate

    /// The DER SubjectPublicKeyInfo of the peer's leaf: the DHT binds a node's ID (the
    /// SHA-256 of its public key) to the connection it speaks on. Encoded when asked
    /// for, so that sidecar handshakes, which never ask, do not pay for it.
    public var peerPublicKey: [UInt8] { peerCertificate.publicKeyDER }
}
