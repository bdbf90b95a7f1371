import COpenSSL

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The trust anchors of one trust domain: the root CA certificates peers must chain to.
public struct TrustBundle: Sendable {
    public let trustDomain: TrustDomain
    public let anchors: [Certificate]

    /// Builds a bundle; every anchor must be a CA certificate.
    public init(trustDomain: TrustDomain, anchors: [Certificate]) throws(IdentityError) {
        guard !anchors.isEmpty else { throw IdentityError(.invalidArgument, "trust bundle is empty") }
        for anchor in anchors where !anchor.isCA {
            throw IdentityError(.invalidArgument, "trust bundle entry \(anchor.subject) is not a CA certificate")
        }
        self.trustDomain = trustDomain
        self.anchors = anchors
    }

    /// The bundle as concatenated PEM.
    public var pemEncoded: String { anchors.map(\.pemEncoded).joined() }

    /// A new OpenSSL certificate store holding the anchors. The caller owns it.
    package func makeStore() -> OpaquePointer {
        let store = X509_STORE_new()!
        for anchor in anchors {
            X509_STORE_add_cert(store, anchor.pointer)
        }
        return store
    }

    /// Verifies `chain` (leaf first, then intermediates) to the bundle at `time`, then the
    /// leaf by the X.509-SVID rules. Returns the leaf's SPIFFE ID.
    public func verify(
        chain: [Certificate],
        at time: Date = Date(),
        expected: SpiffeID? = nil
    ) -> Result<SpiffeID, VerificationFailure> {
        guard let leaf = chain.first else {
            return .failure(VerificationFailure(.noCertificate, "empty chain"))
        }
        let store = makeStore()
        defer { X509_STORE_free(store) }
        let untrusted = beemesh_sk_X509_new_null()
        defer { beemesh_sk_X509_free(untrusted) }
        for certificate in chain.dropFirst() {
            _ = beemesh_sk_X509_push(untrusted, certificate.pointer)
        }
        let context = X509_STORE_CTX_new()!
        defer { X509_STORE_CTX_free(context) }
        guard X509_STORE_CTX_init(context, store, leaf.pointer, untrusted) == 1 else {
            return .failure(VerificationFailure(.invalidChain, OpenSSLErrorQueue.drain()))
        }
        X509_VERIFY_PARAM_set_time(X509_STORE_CTX_get0_param(context), time_t(time.timeIntervalSince1970))
        if X509_verify_cert(context) != 1 {
            let failure = VerificationFailure.fromX509Error(
                X509_STORE_CTX_get_error(context),
                depth: X509_STORE_CTX_get_error_depth(context)
            )
            OpenSSLErrorQueue.clear()
            return .failure(failure)
        }
        return X509SVID.validateLeaf(leaf, trustDomain: trustDomain, expected: expected)
    }
}
