import COpenSSL

/// An asymmetric private key held by OpenSSL (`EVP_PKEY`). Workload and CA keys are
/// ECDSA P-256.
public final class PrivateKey: @unchecked Sendable {
    // Immutable after init; OpenSSL's EVP_PKEY is safe to share read-only across threads.
    package let pointer: OpaquePointer

    package init(taking pointer: OpaquePointer) {
        self.pointer = pointer
    }

    deinit { EVP_PKEY_free(pointer) }

    /// Generates a fresh ECDSA P-256 key from OpenSSL's CSPRNG.
    public static func generateP256() throws(IdentityError) -> PrivateKey {
        guard let ctx = EVP_PKEY_CTX_new_from_name(nil, "EC", nil) else {
            throw .openSSL("EVP_PKEY_CTX_new_from_name(EC)")
        }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_keygen_init(ctx) == 1, EVP_PKEY_CTX_set_group_name(ctx, "P-256") == 1 else {
            throw .openSSL("EC key generation setup")
        }
        var key: OpaquePointer?
        guard EVP_PKEY_generate(ctx, &key) == 1, let key else {
            throw .openSSL("EVP_PKEY_generate(P-256)")
        }
        return PrivateKey(taking: key)
    }

    /// Parses a PEM private key (PKCS#8 or traditional).
    public convenience init(pem: String) throws(IdentityError) {
        let bio = MemoryBIO(pem)
        guard let key = PEM_read_bio_PrivateKey(bio.pointer, nil, nil, nil) else {
            throw IdentityError(.invalidPEM, "no private key in PEM: \(OpenSSLErrorQueue.drain())")
        }
        self.init(taking: key)
    }

    /// The key as unencrypted PKCS#8 PEM.
    public var pemEncoded: String {
        let bio = MemoryBIO()
        PEM_write_bio_PrivateKey(bio.pointer, pointer, nil, nil, 0, nil, nil)
        return bio.string
    }

    /// The DER SubjectPublicKeyInfo of the public half.
    public var publicKeyDER: [UInt8] {
        let bio = MemoryBIO()
        i2d_PUBKEY_bio(bio.pointer, pointer)
        return bio.bytes
    }

    /// A short description such as `ECDSA P-256`.
    public var typeDescription: String { PrivateKey.describe(pointer) }

    package static func describe(_ key: OpaquePointer) -> String {
        switch EVP_PKEY_get_base_id(key) {
        case EVP_PKEY_EC:
            var name = [CChar](repeating: 0, count: 64)
            var length = 0
            if EVP_PKEY_get_utf8_string_param(key, "group", &name, name.count, &length) == 1 {
                let group = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                return group == "prime256v1" ? "ECDSA P-256" : "ECDSA \(group)"
            }
            return "ECDSA"
        case EVP_PKEY_RSA:
            return "RSA \(EVP_PKEY_get_bits(key))"
        case EVP_PKEY_ED25519:
            return "Ed25519"
        default:
            return "unknown (\(EVP_PKEY_get_base_id(key)))"
        }
    }
}
