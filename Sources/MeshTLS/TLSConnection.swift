import COpenSSL
import MeshIdentity
import NIOCore

/// One OpenSSL `SSL` object whose network side is a `ByteBufferBIO`: ciphertext from the
/// network goes in with `receive`, ciphertext for the network comes out of `takeOutput`.
///
/// It does no I/O of its own; `MeshTLSHandler` moves bytes between it and the channel.
/// Not thread-safe: it lives on one event loop.
final class TLSConnection {
    enum Role {
        case server
        /// A client that insists on one peer identity (the route's endpoint), or with
        /// nil accepts any identity of the trust domain (DHT nodes, bound by their key).
        case client(expectedPeer: SpiffeID?)
    }

    enum HandshakeResult {
        case complete
        case inProgress
        case failed(TLSHandshakeError)
    }

    enum ReadResult {
        /// Zero or more plaintext bytes were appended; more may come with more ciphertext.
        case wouldBlock
        /// The peer sent close_notify: its direction is finished.
        case closeNotify
        case failed(String)
    }

    let ssl: OpaquePointer
    private let network: ByteBufferBIO
    private let verification: PeerVerification
    /// Kept alive for as long as `ssl` refers to it.
    let context: TLSContext
    let role: Role

    init(context: TLSContext, role: Role, allocator: ByteBufferAllocator) {
        self.context = context
        self.role = role
        self.ssl = SSL_new(context.pointer)!
        self.network = ByteBufferBIO(allocator: allocator)
        // One BIO serves both directions; SSL_set_bio then owns one reference to it.
        SSL_set_bio(ssl, network.bio, network.bio)
        let expected: SpiffeID?
        if case .client(let peer) = role { expected = peer } else { expected = nil }
        self.verification = PeerVerification(trustDomain: context.trustDomain, expectedPeer: expected)
        SSL_set_ex_data(ssl, PeerVerification.exDataIndex, Unmanaged.passUnretained(verification).toOpaque())
        switch role {
        case .server: SSL_set_accept_state(ssl)
        case .client: SSL_set_connect_state(ssl)
        }
    }

    deinit {
        SSL_free(ssl)  // frees the BIO too
    }

    /// The peer's verified identity, once the handshake completed.
    var peer: SpiffeID? { verification.peer }

    /// The negotiated protocol version, e.g. `TLSv1.3`.
    var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    /// The peer's leaf (nil before the handshake).
    var peerCertificate: Certificate? {
        SSL_get0_peer_certificate(ssl).map { Certificate(retaining: $0) }
    }

    /// The negotiated cipher suite, e.g. `TLS_AES_128_GCM_SHA256`.
    var cipher: String {
        guard let cipher = SSL_get_current_cipher(ssl) else { return "none" }
        return String(cString: SSL_CIPHER_get_name(cipher))
    }

    /// Appends ciphertext received from the network.
    func receive(_ buffer: ByteBuffer) {
        network.receive(buffer)
    }

    /// Advances the handshake with whatever ciphertext has arrived.
    func handshake() -> HandshakeResult {
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 {
            return checkNegotiated()
        }
        let error = SSL_get_error(ssl, result)
        if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE {
            return .inProgress
        }
        return .failed(classifyHandshakeFailure())
    }

    private func checkNegotiated() -> HandshakeResult {
        var alpn: UnsafePointer<UInt8>?
        var alpnLength: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &alpn, &alpnLength)
        let negotiated = alpn.map {
            String(decoding: UnsafeBufferPointer(start: $0, count: Int(alpnLength)), as: UTF8.self)
        }
        guard negotiated == meshALPN else {
            return .failed(
                TLSHandshakeError(.alpn, "peer did not negotiate ALPN \(meshALPN) (got \(negotiated ?? "none"))")
            )
        }
        guard verification.peer != nil else {
            return .failed(
                TLSHandshakeError(.certificate(.noCertificate), "handshake finished without a verified peer identity")
            )
        }
        return .complete
    }

    private func classifyHandshakeFailure() -> TLSHandshakeError {
        let packed = ERR_peek_error()
        let library = OpenSSLErrorQueue.drain(or: "handshake failed")
        if let failure = verification.failure {
            return TLSHandshakeError(failure)
        }
        if ERR_GET_LIB(packed) == ERR_LIB_SSL {
            switch ERR_GET_REASON(packed) {
            case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
                return TLSHandshakeError(.certificate(.noCertificate), "peer presented no certificate")
            case SSL_R_NO_APPLICATION_PROTOCOL:
                return TLSHandshakeError(.alpn, "no common ALPN protocol (\(meshALPN) required)")
            case SSL_R_UNSUPPORTED_PROTOCOL, SSL_R_NO_PROTOCOLS_AVAILABLE, SSL_R_WRONG_VERSION_NUMBER,
                SSL_R_VERSION_TOO_LOW:
                return TLSHandshakeError(.protocolVersion, library)
            default:
                break
            }
        }
        if library.contains("alert") {
            return TLSHandshakeError(.peerAlert, library)
        }
        return TLSHandshakeError(.protocolError, library)
    }

    /// Decrypts as much as possible into `buffer`, which the caller sized to hold at
    /// least the ciphertext fed so far (plaintext is never larger).
    func read(into buffer: inout ByteBuffer) -> ReadResult {
        // SSL_get_error reports any error still queued on this thread as this call's.
        ERR_clear_error()
        while true {
            if buffer.writableBytes == 0 {
                buffer.reserveCapacity(minimumWritableBytes: 16 * 1024)
            }
            var error: Int32 = 0
            let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 1) { bytes in
                let n = SSL_read(ssl, bytes.baseAddress, Int32(min(bytes.count, Int(Int32.max))))
                if n > 0 { return Int(n) }
                error = SSL_get_error(ssl, n)
                return 0
            }
            if count > 0 { continue }
            switch error {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                return .wouldBlock
            case SSL_ERROR_ZERO_RETURN:
                return .closeNotify
            default:
                return .failed(OpenSSLErrorQueue.drain(or: "SSL_read error \(error)"))
            }
        }
    }

    /// Encrypts `buffer` entirely into the outgoing BIO.
    func write(_ buffer: ByteBuffer) -> String? {
        network.reserveOutput(forPlaintext: buffer.readableBytes)
        ERR_clear_error()
        var remaining = buffer
        while remaining.readableBytes > 0 {
            let n = remaining.withUnsafeReadableBytes { bytes in
                SSL_write(ssl, bytes.baseAddress, Int32(min(bytes.count, Int(Int32.max))))
            }
            if n <= 0 {
                return OpenSSLErrorQueue.drain(or: "SSL_write error \(SSL_get_error(ssl, n))")
            }
            remaining.moveReaderIndex(forwardBy: Int(n))
        }
        return nil
    }

    /// Queues close_notify for the peer; reading stays possible (TLS 1.3 half-close).
    func shutdown() {
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    /// Bytes waiting to go to the network.
    var pendingOutput: Int { network.pendingOutput }

    /// Takes the ciphertext waiting for the network.
    func takeOutput() -> ByteBuffer? { network.takeOutput() }

    /// Whether nothing is held between OpenSSL and the channel: every ciphertext byte
    /// received went into OpenSSL and every byte it produced was taken. Only then can
    /// the connection move to another transport without losing or reordering bytes (a
    /// partial record inside OpenSSL is fine: it is completed from the new transport).
    var isQuiescent: Bool {
        (network.input?.readableBytes ?? 0) == 0 && network.pendingOutput == 0
    }
}
