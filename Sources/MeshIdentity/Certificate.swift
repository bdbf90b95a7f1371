import COpenSSL

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// An X.509 certificate held by OpenSSL, with the accessors the mesh needs.
public final class Certificate: @unchecked Sendable, CustomStringConvertible {
    // Immutable after init; OpenSSL X509 objects are safe to read from several threads.
    package let pointer: OpaquePointer

    /// Takes ownership of one reference to `pointer`.
    package init(taking pointer: OpaquePointer) {
        self.pointer = pointer
    }

    /// Adds a reference to `pointer` (for certificates borrowed from OpenSSL).
    package init(retaining pointer: OpaquePointer) {
        X509_up_ref(pointer)
        self.pointer = pointer
    }

    deinit { X509_free(pointer) }

    /// Parses every certificate in a PEM document, in order.
    public static func parseChain(pem: String) throws(IdentityError) -> [Certificate] {
        let bio = MemoryBIO(pem)
        var chain: [Certificate] = []
        while let x509 = PEM_read_bio_X509(bio.pointer, nil, nil, nil) {
            chain.append(Certificate(taking: x509))
        }
        // Reaching the end of the input leaves a "no start line" error behind: expected.
        OpenSSLErrorQueue.clear()
        guard !chain.isEmpty else {
            throw IdentityError(.invalidPEM, "no certificate in PEM")
        }
        return chain
    }

    /// Parses one DER certificate.
    public convenience init(der: [UInt8]) throws(IdentityError) {
        let parsed: OpaquePointer? = der.withUnsafeBufferPointer { buffer in
            var cursor = buffer.baseAddress
            return d2i_X509(nil, &cursor, buffer.count)
        }
        guard let parsed else { throw IdentityError(.invalidPEM, "bad DER certificate: \(OpenSSLErrorQueue.drain())") }
        self.init(taking: parsed)
    }

    /// The certificate as PEM.
    public var pemEncoded: String {
        let bio = MemoryBIO()
        PEM_write_bio_X509(bio.pointer, pointer)
        return bio.string
    }

    /// The certificate as DER.
    public var derEncoded: [UInt8] {
        let bio = MemoryBIO()
        i2d_X509_bio(bio.pointer, pointer)
        return bio.bytes
    }

    /// Subject distinguished name, RFC 2253 order.
    public var subject: String { Certificate.format(X509_get_subject_name(pointer)) }
    /// Issuer distinguished name, RFC 2253 order.
    public var issuer: String { Certificate.format(X509_get_issuer_name(pointer)) }

    /// Start of validity.
    public var notBefore: Date { Certificate.date(X509_get0_notBefore(pointer)) }
    /// End of validity.
    public var notAfter: Date { Certificate.date(X509_get0_notAfter(pointer)) }

    /// Serial number in hexadecimal.
    public var serialNumber: String {
        guard let bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(pointer), nil) else { return "?" }
        defer { BN_free(bn) }
        guard let hex = BN_bn2hex(bn) else { return "?" }
        defer { CRYPTO_free(hex, #fileID, #line) }
        return String(cString: hex).lowercased()
    }

    /// SHA-256 of the DER encoding, lowercase hex.
    public var sha256Fingerprint: String {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        X509_digest(pointer, EVP_sha256(), &digest, &length)
        return digest.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }

    /// The public key's type, e.g. `ECDSA P-256`.
    public var publicKeyType: String {
        guard let key = X509_get0_pubkey(pointer) else { return "none" }
        return PrivateKey.describe(key)
    }

    /// Whether the basicConstraints extension says cA=TRUE.
    /// The DER SubjectPublicKeyInfo of the certificate's key.
    public var publicKeyDER: [UInt8] {
        // The certificate's own SubjectPublicKeyInfo, encoded again from its ASN.1
        // fields, without OpenSSL 3's encoder lookup. These are the bytes the issuer
        // wrote: for certificates whose key OpenSSL encoded (our CA's, through
        // X509_set_pubkey) they equal `PrivateKey.publicKeyDER`, which node IDs are
        // compared against; a non-canonical encoding would give other bytes.
        guard let spki = X509_get_X509_PUBKEY(pointer) else { return [] }
        let length = i2d_X509_PUBKEY(spki, nil)
        guard length > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: Int(length))
        let written = bytes.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor: UnsafeMutablePointer<UInt8>? = buffer.baseAddress
            return i2d_X509_PUBKEY(spki, &cursor)
        }
        return written == length ? bytes : []
    }

    public var isCA: Bool { X509_check_ca(pointer) != 0 && basicConstraintsCA }

    private var basicConstraintsCA: Bool {
        (X509_get_extension_flags(pointer) & UInt32(EXFLAG_CA)) != 0
    }

    /// The keyUsage bits, or nil when the extension is absent.
    public var keyUsage: KeyUsage? {
        guard (X509_get_extension_flags(pointer) & UInt32(EXFLAG_KUSAGE)) != 0 else { return nil }
        return KeyUsage(rawValue: X509_get_key_usage(pointer))
    }

    /// The extendedKeyUsage bits, or nil when the extension is absent.
    public var extendedKeyUsage: ExtendedKeyUsage? {
        guard (X509_get_extension_flags(pointer) & UInt32(EXFLAG_XKUSAGE)) != 0 else { return nil }
        return ExtendedKeyUsage(rawValue: X509_get_extended_key_usage(pointer))
    }

    /// Every URI subjectAltName, in order.
    public var uriSANs: [String] {
        guard let raw = X509_get_ext_d2i(pointer, NID_subject_alt_name, nil, nil) else { return [] }
        let names = OpaquePointer(raw)
        defer { beemesh_GENERAL_NAMES_free(names) }
        var uris: [String] = []
        for index in 0..<beemesh_sk_GENERAL_NAME_num(names) {
            guard let name = beemesh_sk_GENERAL_NAME_value(names, index),
                name.pointee.type == GEN_URI,
                let ia5 = name.pointee.d.uniformResourceIdentifier
            else { continue }
            let length = Int(ASN1_STRING_length(ia5))
            guard let data = ASN1_STRING_get0_data(ia5) else { continue }
            uris.append(String(decoding: UnsafeBufferPointer(start: data, count: length), as: UTF8.self))
        }
        return uris
    }

    /// The SPIFFE ID when the certificate carries exactly one URI SAN that parses as one.
    public var spiffeID: SpiffeID? {
        let uris = uriSANs
        guard uris.count == 1 else { return nil }
        return try? SpiffeID(uris[0])
    }

    /// Whether `key` is the private half of this certificate's public key.
    public func matches(_ key: PrivateKey) -> Bool {
        X509_check_private_key(pointer, key.pointer) == 1
    }

    public var description: String { "Certificate(subject: \(subject), serial: \(serialNumber))" }

    private static func format(_ name: OpaquePointer?) -> String {
        guard let name else { return "" }
        let bio = MemoryBIO()
        X509_NAME_print_ex(bio.pointer, name, 0, beemesh_XN_FLAG_RFC2253())
        return bio.string
    }

    private static func date(_ time: UnsafePointer<ASN1_TIME>?) -> Date {
        var parsed = tm()
        guard let time, ASN1_TIME_to_tm(time, &parsed) == 1 else { return .distantPast }
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parsed)))
    }
}

/// X.509 keyUsage bits, as OpenSSL reports them (`KU_*`).
public struct KeyUsage: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let digitalSignature = KeyUsage(rawValue: UInt32(KU_DIGITAL_SIGNATURE))
    public static let keyEncipherment = KeyUsage(rawValue: UInt32(KU_KEY_ENCIPHERMENT))
    public static let keyAgreement = KeyUsage(rawValue: UInt32(KU_KEY_AGREEMENT))
    public static let keyCertSign = KeyUsage(rawValue: UInt32(KU_KEY_CERT_SIGN))
    public static let cRLSign = KeyUsage(rawValue: UInt32(KU_CRL_SIGN))

    /// The names OpenSSL's config syntax uses, in a stable order.
    var names: [String] {
        var names: [String] = []
        if contains(.digitalSignature) { names.append("digitalSignature") }
        if contains(.keyEncipherment) { names.append("keyEncipherment") }
        if contains(.keyAgreement) { names.append("keyAgreement") }
        if contains(.keyCertSign) { names.append("keyCertSign") }
        if contains(.cRLSign) { names.append("cRLSign") }
        return names
    }
}

/// X.509 extendedKeyUsage bits, as OpenSSL reports them (`XKU_*`).
public struct ExtendedKeyUsage: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let serverAuth = ExtendedKeyUsage(rawValue: UInt32(XKU_SSL_SERVER))
    public static let clientAuth = ExtendedKeyUsage(rawValue: UInt32(XKU_SSL_CLIENT))

    var names: [String] {
        var names: [String] = []
        if contains(.serverAuth) { names.append("serverAuth") }
        if contains(.clientAuth) { names.append("clientAuth") }
        return names
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
