import COpenSSL

/// Signatures over messages with workload keys, through OpenSSL's EVP interface: what
/// signed DHT records are made and checked with.
extension PrivateKey {
    /// Signs `message` (SHA-256, then the key's scheme: ECDSA for workload keys); the
    /// signature is DER.
    public func sign(_ message: [UInt8]) throws(IdentityError) -> [UInt8] {
        guard let context = EVP_MD_CTX_new() else { throw .openSSL("EVP_MD_CTX_new") }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestSignInit(context, nil, EVP_sha256(), nil, pointer) == 1 else {
            throw .openSSL("EVP_DigestSignInit")
        }
        var length = 0
        let sized = message.withUnsafeBufferPointer { EVP_DigestSign(context, nil, &length, $0.baseAddress, $0.count) }
        guard sized == 1 else { throw .openSSL("EVP_DigestSign (length)") }
        var signature = [UInt8](repeating: 0, count: length)
        let signed = message.withUnsafeBufferPointer { input in
            signature.withUnsafeMutableBufferPointer { output in
                EVP_DigestSign(context, output.baseAddress, &length, input.baseAddress, input.count)
            }
        }
        guard signed == 1 else { throw .openSSL("EVP_DigestSign") }
        return Array(signature.prefix(length))
    }
}

extension Certificate {
    /// Whether `signature` over `message` was made with this certificate's key.
    public func verify(signature: [UInt8], over message: [UInt8]) -> Bool {
        guard let key = X509_get0_pubkey(pointer), let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestVerifyInit(context, nil, EVP_sha256(), nil, key) == 1 else {
            OpenSSLErrorQueue.clear()
            return false
        }
        let result = message.withUnsafeBufferPointer { input in
            signature.withUnsafeBufferPointer { signed in
                EVP_DigestVerify(context, signed.baseAddress, signed.count, input.baseAddress, input.count)
            }
        }
        OpenSSLErrorQueue.clear()
        return result == 1
    }
}

/// SHA-256, for IDs derived from names and keys.
public enum Digest {
    public static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        _ = bytes.withUnsafeBufferPointer { input in
            digest.withUnsafeMutableBufferPointer { output in
                EVP_Digest(input.baseAddress, input.count, output.baseAddress, &length, EVP_sha256(), nil)
            }
        }
        return digest
    }
}
