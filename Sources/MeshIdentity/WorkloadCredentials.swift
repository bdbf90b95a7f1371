#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A workload's X.509-SVID, its private key and the trust bundle it verifies peers with.
///
/// On disk: `cert.pem` (leaf followed by its chain), `key.pem` (0600) and `bundle.pem`.
public struct WorkloadCredentials: Sendable {
    /// The leaf, then its intermediates.
    public let chain: [Certificate]
    public let key: PrivateKey
    public let bundle: TrustBundle

    public var leaf: Certificate { chain[0] }

    public init(chain: [Certificate], key: PrivateKey, bundle: TrustBundle) {
        self.chain = chain
        self.key = key
        self.bundle = bundle
    }

    /// The leaf's SPIFFE ID, if it carries exactly one valid one.
    public var spiffeID: SpiffeID? { leaf.spiffeID }

    public static let certificateFile = "cert.pem"
    public static let keyFile = "key.pem"
    public static let bundleFile = "bundle.pem"

    /// Loads and cross-checks credentials: the key matches the leaf, the leaf is a valid
    /// SVID, and it verifies to the bundle now (an expired file is reported, not used).
    public static func load(
        certificate certificatePath: String,
        key keyPath: String,
        bundle bundlePath: String,
        now: Date = Date()
    ) throws(IdentityError) -> WorkloadCredentials {
        let chain = try Certificate.parseChain(pem: try PEMFile.read(certificatePath))
        let key = try PrivateKey(pem: try PEMFile.read(keyPath))
        guard chain[0].matches(key) else {
            throw IdentityError(.keyMismatch, "\(keyPath) does not match the leaf in \(certificatePath)")
        }
        guard let id = chain[0].spiffeID else {
            throw IdentityError(.invalidSpiffeID, "\(certificatePath): leaf has no single valid SPIFFE ID URI SAN")
        }
        let anchors = try Certificate.parseChain(pem: try PEMFile.read(bundlePath))
        let bundle = try TrustBundle(trustDomain: id.trustDomain, anchors: anchors)
        if case .failure(let failure) = bundle.verify(chain: chain, at: now) {
            throw IdentityError(.invalidArgument, "\(certificatePath) does not verify to \(bundlePath): \(failure)")
        }
        return WorkloadCredentials(chain: chain, key: key, bundle: bundle)
    }

    /// Writes `cert.pem`, `key.pem` (0600) and `bundle.pem` into `directory`, each replaced atomically.
    public func write(to directory: String) throws(IdentityError) {
        try PEMFile.createDirectory(directory)
        try PEMFile.write(directory + "/" + WorkloadCredentials.keyFile, key.pemEncoded, mode: 0o600)
        try PEMFile.write(directory + "/" + WorkloadCredentials.certificateFile, chain.map(\.pemEncoded).joined())
        try PEMFile.write(directory + "/" + WorkloadCredentials.bundleFile, bundle.pemEncoded)
    }
}
