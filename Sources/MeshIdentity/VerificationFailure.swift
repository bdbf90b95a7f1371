import COpenSSL

/// Why a peer's certificate chain or identity was refused.
///
/// The raw values are stable: they appear in logs, metrics labels and flow records.
public struct VerificationFailure: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Reason: String, Sendable, Hashable, CaseIterable {
        /// The peer presented no certificate (a client without one, on an mTLS listener).
        case noCertificate = "no_certificate"
        /// The chain does not lead to an anchor of the trust bundle.
        case unknownCA = "unknown_ca"
        case expired = "expired"
        case notYetValid = "not_yet_valid"
        /// An intermediate's name constraints exclude the leaf's URI.
        case nameConstraints = "name_constraints"
        /// Any other chain error (bad signature, bad CA flags on an intermediate, …).
        case invalidChain = "invalid_chain"
        case noURISAN = "no_uri_san"
        case multipleURISANs = "multiple_uri_sans"
        case invalidSpiffeID = "invalid_spiffe_id"
        /// A certificate with cA=TRUE presented as a workload leaf.
        case caAsLeaf = "ca_as_leaf"
        /// A leaf allowed to sign certificates or CRLs, or lacking digitalSignature.
        case badKeyUsage = "bad_key_usage"
        case foreignTrustDomain = "foreign_trust_domain"
        /// The identity is valid but is not the one the route expects.
        case unexpectedIdentity = "unexpected_identity"
    }

    public let reason: Reason
    public let detail: String

    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { "\(reason.rawValue): \(detail)" }

    /// Maps an OpenSSL `X509_V_ERR_*` code to a reason.
    package static func fromX509Error(_ code: Int32, depth: Int32) -> VerificationFailure {
        let text = String(cString: X509_verify_cert_error_string(Int(code)))
        let reason: Reason
        switch code {
        case X509_V_ERR_CERT_HAS_EXPIRED:
            reason = .expired
        case X509_V_ERR_CERT_NOT_YET_VALID:
            reason = .notYetValid
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
            X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
            X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, X509_V_ERR_CERT_UNTRUSTED:
            reason = .unknownCA
        case X509_V_ERR_PERMITTED_VIOLATION, X509_V_ERR_EXCLUDED_VIOLATION,
            X509_V_ERR_UNSUPPORTED_NAME_SYNTAX, X509_V_ERR_UNSUPPORTED_CONSTRAINT_TYPE:
            reason = .nameConstraints
        default:
            reason = .invalidChain
        }
        return VerificationFailure(reason, "\(text) (X509_V_ERR \(code) at depth \(depth))")
    }
}

/// The X.509-SVID rules for a workload leaf certificate.
///
/// | rule | reason when broken |
/// | --- | --- |
/// | basicConstraints cA is not TRUE | `ca_as_leaf` |
/// | exactly one URI SAN | `no_uri_san`, `multiple_uri_sans` |
/// | the URI is a valid SPIFFE ID | `invalid_spiffe_id` |
/// | its trust domain is ours | `foreign_trust_domain` |
/// | keyUsage has digitalSignature, not keyCertSign or cRLSign | `bad_key_usage` |
/// | it equals the identity the caller expects, if any | `unexpected_identity` |
public enum X509SVID {
    public static func validateLeaf(
        _ leaf: Certificate,
        trustDomain: TrustDomain,
        expected: SpiffeID? = nil
    ) -> Result<SpiffeID, VerificationFailure> {
        if leaf.isCA {
            return .failure(VerificationFailure(.caAsLeaf, "leaf \(leaf.subject) has cA=TRUE"))
        }
        let uris = leaf.uriSANs
        guard !uris.isEmpty else {
            return .failure(VerificationFailure(.noURISAN, "leaf \(leaf.subject) has no URI SAN"))
        }
        guard uris.count == 1 else {
            return .failure(VerificationFailure(.multipleURISANs, "leaf has \(uris.count) URI SANs: \(uris)"))
        }
        let id: SpiffeID
        do {
            id = try SpiffeID(uris[0])
        } catch {
            return .failure(VerificationFailure(.invalidSpiffeID, error.reason))
        }
        guard id.trustDomain == trustDomain else {
            return .failure(
                VerificationFailure(.foreignTrustDomain, "\(id) is not in trust domain \(trustDomain)")
            )
        }
        if let usage = leaf.keyUsage {
            guard usage.contains(.digitalSignature), !usage.contains(.keyCertSign), !usage.contains(.cRLSign) else {
                return .failure(VerificationFailure(.badKeyUsage, "\(id): keyUsage \(usage.names)"))
            }
        } else {
            return .failure(VerificationFailure(.badKeyUsage, "\(id): no keyUsage extension"))
        }
        if let expected, expected != id {
            return .failure(VerificationFailure(.unexpectedIdentity, "peer is \(id), route expects \(expected)"))
        }
        return .success(id)
    }
}
