#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A certificate authority of a trust domain: the root, or a node's intermediate.
///
/// On disk (`beectl ca init|intermediate`), a CA directory holds:
///
/// | file | contents |
/// | --- | --- |
/// | `ca.pem` | the CA certificate followed by its chain up to, not including, the root |
/// | `ca.key` | its private key, mode 0600 |
/// | `bundle.pem` | the trust anchors (the root certificate) |
///
/// CA certificates carry the URI SAN `spiffe://<trust-domain>` (allowed by the
/// X.509-SVID specification for signing certificates), which is how a CA directory
/// knows its trust domain.
public struct CertificateAuthority: Sendable {
    public let trustDomain: TrustDomain
    /// The CA certificate, then intermediates up to (not including) the root.
    public let chain: [Certificate]
    public let key: PrivateKey
    public let bundle: TrustBundle

    public var certificate: Certificate { chain[0] }

    public static let caFile = "ca.pem"
    public static let keyFile = "ca.key"
    public static let bundleFile = "bundle.pem"

    /// Creates a self-signed root CA (ECDSA P-256).
    public static func createRoot(
        trustDomain: TrustDomain,
        validity: TimeInterval = 10 * 365 * 86_400,
        now: Date = Date()
    ) throws(IdentityError) -> CertificateAuthority {
        let key = try PrivateKey.generateP256()
        var template = CertificateTemplate.root(trustDomain: trustDomain, validity: validity, now: now)
        template.uriSANs = ["spiffe://\(trustDomain.name)"]
        let root = try template.sign(subjectKey: key, issuer: nil, issuerKey: key)
        return CertificateAuthority(
            trustDomain: trustDomain,
            chain: [root],
            key: key,
            bundle: try TrustBundle(trustDomain: trustDomain, anchors: [root])
        )
    }

    /// Issues a node intermediate CA, name-constrained to this trust domain's URIs.
    public func issueIntermediate(
        nodeName: String,
        validity: TimeInterval = 720 * 3600,
        now: Date = Date()
    ) throws(IdentityError) -> CertificateAuthority {
        let key = try PrivateKey.generateP256()
        var template = CertificateTemplate.intermediate(
            trustDomain: trustDomain,
            nodeName: nodeName,
            validity: validity,
            now: now
        )
        template.uriSANs = ["spiffe://\(trustDomain.name)"]
        template.notAfter = min(template.notAfter, certificate.notAfter)
        let issued = try template.sign(subjectKey: key, issuer: certificate, issuerKey: self.key)
        return CertificateAuthority(
            trustDomain: trustDomain,
            chain: [issued] + chainWithoutRoot,
            key: key,
            bundle: bundle
        )
    }

    /// Issues a workload X.509-SVID for `id`, with a new key unless one is given.
    public func issueWorkload(
        _ id: SpiffeID,
        validity: TimeInterval = 24 * 3600,
        key: PrivateKey? = nil,
        now: Date = Date()
    ) throws(IdentityError) -> WorkloadCredentials {
        guard id.trustDomain == trustDomain else {
            throw IdentityError(.invalidArgument, "\(id) is not in trust domain \(trustDomain)")
        }
        let workloadKey: PrivateKey
        if let key {
            workloadKey = key
        } else {
            workloadKey = try PrivateKey.generateP256()
        }
        return try issue(CertificateTemplate.workload(id, validity: validity, now: now), key: workloadKey)
    }

    /// Signs an arbitrary template with this CA; the result is not checked against the
    /// SVID rules (tests use this to make certificates that peers must refuse).
    public func issue(_ template: CertificateTemplate, key: PrivateKey) throws(IdentityError) -> WorkloadCredentials {
        var template = template
        template.notAfter = min(template.notAfter, certificate.notAfter)
        let leaf = try template.sign(subjectKey: key, issuer: certificate, issuerKey: self.key)
        return WorkloadCredentials(chain: [leaf] + chainWithoutRoot, key: key, bundle: bundle)
    }

    /// The chain that goes after an issued certificate: this CA and its intermediates,
    /// without a self-signed root (peers have it in their bundle).
    private var chainWithoutRoot: [Certificate] {
        chain.filter { $0.subject != $0.issuer }
    }

    /// Loads a CA directory written by `write(to:)`.
    public static func load(directory: String) throws(IdentityError) -> CertificateAuthority {
        let chain = try Certificate.parseChain(pem: try PEMFile.read(directory + "/" + caFile))
        let key = try PrivateKey(pem: try PEMFile.read(directory + "/" + keyFile))
        let anchors = try Certificate.parseChain(pem: try PEMFile.read(directory + "/" + bundleFile))
        guard chain[0].isCA else {
            throw IdentityError(.invalidArgument, "\(directory)/\(caFile) is not a CA certificate")
        }
        guard chain[0].matches(key) else {
            throw IdentityError(.keyMismatch, "\(directory)/\(keyFile) does not match \(directory)/\(caFile)")
        }
        guard let uri = chain[0].uriSANs.first, let id = try? SpiffeID(uri) else {
            throw IdentityError(.invalidArgument, "\(directory)/\(caFile) has no spiffe://<trust-domain> URI SAN")
        }
        return CertificateAuthority(
            trustDomain: id.trustDomain,
            chain: chain,
            key: key,
            bundle: try TrustBundle(trustDomain: id.trustDomain, anchors: anchors)
        )
    }

    /// Writes `ca.pem`, `ca.key` (0600) and `bundle.pem` into `directory`, creating it.
    public func write(to directory: String) throws(IdentityError) {
        try PEMFile.createDirectory(directory)
        try PEMFile.write(directory + "/" + CertificateAuthority.keyFile, key.pemEncoded, mode: 0o600)
        try PEMFile.write(directory + "/" + CertificateAuthority.caFile, chain.map(\.pemEncoded).joined())
        try PEMFile.write(directory + "/" + CertificateAuthority.bundleFile, bundle.pemEncoded)
    }
}
