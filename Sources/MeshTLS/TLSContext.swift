import COpenSSL
import MeshIdentity

/// The ALPN protocol every BeeMesh mTLS connection negotiates.
public let meshALPN = "beemesh/1"

/// An OpenSSL `SSL_CTX` configured for mesh mTLS from one set of workload credentials.
///
/// Settings, fixed on purpose (security defaults are not options):
///
/// | setting | value |
/// | --- | --- |
/// | protocol | TLS 1.3 only |
/// | peer certificate | required both ways (`SSL_VERIFY_PEER`, `FAIL_IF_NO_PEER_CERT`) |
/// | chain | verified to the trust bundle, then the leaf by the X.509-SVID rules |
/// | ALPN | `beemesh/1`, required both ways |
/// | resumption | off: no session cache, no tickets, every connection authenticates fully |
/// | buffers | released while idle (`SSL_MODE_RELEASE_BUFFERS`) to keep idle connections small |
///
/// A context is immutable once built; reloading credentials builds a new one, and live
/// connections keep the context they started with.
public final class TLSContext: @unchecked Sendable {
    // SSL_CTX is safe to share across threads once configured; nothing mutates it later.
    let pointer: OpaquePointer
    /// The credentials this context presents.
    public let credentials: WorkloadCredentials
    /// The local identity (the leaf's SPIFFE ID); nil only for deliberately malformed
    /// test credentials (`WorkloadCredentials.load` refuses such files).
    public let identity: SpiffeID?
    /// The trust domain peers must belong to (the bundle's).
    public let trustDomain: TrustDomain

    public init(credentials: WorkloadCredentials) throws(TLSConfigurationError) {
        guard let ctx = SSL_CTX_new(TLS_method()) else {
            throw TLSConfigurationError("SSL_CTX_new: \(OpenSSLErrorQueue.drain())")
        }
        self.pointer = ctx
        self.credentials = credentials
        self.identity = credentials.spiffeID
        self.trustDomain = credentials.bundle.trustDomain

        guard beemesh_SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) == 1,
            beemesh_SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1
        else {
            throw TLSConfigurationError("cannot restrict to TLS 1.3: \(OpenSSLErrorQueue.drain())")
        }
        _ = beemesh_SSL_CTX_set_options(ctx, beemesh_SSL_OP_NO_TICKET() | beemesh_SSL_OP_NO_RENEGOTIATION())
        // No automatic chain: without it OpenSSL completes a leaf-only chain from the
        // trust store on every handshake (verifying our own leaf's signature again) and
        // sends the root, which every peer already holds as its anchor and must then
        // decode. Intermediates the credentials carry are still sent (below).
        _ = beemesh_SSL_CTX_set_mode(
            ctx,
            Int(SSL_MODE_RELEASE_BUFFERS) | Int(SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER) | Int(SSL_MODE_NO_AUTO_CHAIN)
        )
        _ = beemesh_SSL_CTX_set_session_cache_mode(ctx, Int(SSL_SESS_CACHE_OFF))
        SSL_CTX_set_num_tickets(ctx, 0)
        _ = beemesh_SSL_CTX_set1_groups_list(ctx, "X25519:P-256")
        // AES-128-GCM first: as strong as needed for 24 h session keys, and the fastest with AES-NI.
        _ = SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")

        guard SSL_CTX_use_certificate(ctx, credentials.leaf.pointer) == 1 else {
            throw TLSConfigurationError("certificate rejected: \(OpenSSLErrorQueue.drain())")
        }
        for intermediate in credentials.chain.dropFirst() {
            guard beemesh_SSL_CTX_add1_chain_cert(ctx, intermediate.pointer) == 1 else {
                throw TLSConfigurationError("chain certificate rejected: \(OpenSSLErrorQueue.drain())")
            }
        }
        guard SSL_CTX_use_PrivateKey(ctx, credentials.key.pointer) == 1, SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSConfigurationError("private key does not match the certificate: \(OpenSSLErrorQueue.drain())")
        }
        SSL_CTX_set_cert_store(ctx, credentials.bundle.makeStore())
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, peerVerifyCallback)

        guard SSL_CTX_set_alpn_protos(ctx, alpnWire.pointer, UInt32(alpnWire.count)) == 0 else {
            throw TLSConfigurationError("cannot set ALPN: \(OpenSSLErrorQueue.drain())")
        }
        SSL_CTX_set_alpn_select_cb(ctx, alpnSelectCallback, nil)
    }

    deinit { SSL_CTX_free(pointer) }
}

/// A context could not be built from the given credentials.
public struct TLSConfigurationError: Error, CustomStringConvertible, Sendable {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// `beemesh/1` in ALPN wire format (length-prefixed), in memory that lives for the process.
private struct ALPNWire: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<UInt8>
    let count: Int

    init(_ name: String) {
        let bytes = [UInt8(name.utf8.count)] + Array(name.utf8)
        pointer = .allocate(capacity: bytes.count)
        pointer.initialize(from: bytes, count: bytes.count)
        count = bytes.count
    }
}

private let alpnWire = ALPNWire(meshALPN)

/// Server side: pick `beemesh/1` from the client's list or end the handshake with
/// `no_application_protocol`.
private let alpnSelectCallback:
    @convention(c) (
        OpaquePointer?, UnsafeMutablePointer<UnsafePointer<UInt8>?>?, UnsafeMutablePointer<UInt8>?,
        UnsafePointer<UInt8>?, UInt32, UnsafeMutableRawPointer?
    ) -> Int32 = { _, out, outLength, clientList, clientLength, _ in
        var selected: UnsafeMutablePointer<UInt8>?
        var selectedLength: UInt8 = 0
        let result = SSL_select_next_proto(
            &selected,
            &selectedLength,
            alpnWire.pointer,
            UInt32(alpnWire.count),
            clientList,
            clientLength
        )
        guard result == OPENSSL_NPN_NEGOTIATED, let selected else { return SSL_TLSEXT_ERR_ALERT_FATAL }
        out?.pointee = UnsafePointer(selected)
        outLength?.pointee = selectedLength
        return SSL_TLSEXT_ERR_OK
    }

/// Called by OpenSSL for each certificate of the peer's chain. Chain errors are recorded
/// with their reason; at depth 0, when the chain is good, the leaf is checked by the
/// X.509-SVID rules and, on the client, against the identity the route expects. Any
/// failure ends the handshake with an alert, before a byte of payload is exchanged.
private let peerVerifyCallback: @convention(c) (Int32, OpaquePointer?) -> Int32 = { preverifyOK, store in
    guard let store,
        let sslRaw = X509_STORE_CTX_get_ex_data(store, beemesh_X509_STORE_CTX_ssl_index()),
        let stateRaw = SSL_get_ex_data(OpaquePointer(sslRaw), PeerVerification.exDataIndex)
    else { return 0 }
    let verification = Unmanaged<PeerVerification>.fromOpaque(stateRaw).takeUnretainedValue()
    let depth = X509_STORE_CTX_get_error_depth(store)
    if preverifyOK == 0 {
        verification.recordFirst(
            VerificationFailure.fromX509Error(X509_STORE_CTX_get_error(store), depth: depth)
        )
        return 0
    }
    guard depth == 0 else { return 1 }
    guard let leafPointer = X509_STORE_CTX_get_current_cert(store) else { return 0 }
    let leaf = Certificate(retaining: leafPointer)
    switch X509SVID.validateLeaf(leaf, trustDomain: verification.trustDomain, expected: verification.expectedPeer) {
    case .success(let id):
        verification.peer = id
        return 1
    case .failure(let failure):
        verification.recordFirst(failure)
        X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION)
        return 0
    }
}

/// Per-connection verification state, reachable from OpenSSL's callback through the
/// `SSL` object's ex_data slot. Owned by the connection; used only on its event loop.
final class PeerVerification {
    static let exDataIndex: Int32 = beemesh_SSL_get_ex_new_index()

    let trustDomain: TrustDomain
    let expectedPeer: SpiffeID?
    var peer: SpiffeID?
    var failure: VerificationFailure?

    init(trustDomain: TrustDomain, expectedPeer: SpiffeID?) {
        self.trustDomain = trustDomain
        self.expectedPeer = expectedPeer
    }

    func recordFirst(_ failure: VerificationFailure) {
        if self.failure == nil { self.failure = failure }
    }
}
