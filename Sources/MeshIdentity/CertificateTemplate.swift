import COpenSSL

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Everything that goes into one certificate, before it is signed.
///
/// The named constructors (`root`, `intermediate`, `workload`) produce what the mesh
/// issues; tests build deliberately malformed templates from the same type to prove
/// that verification rejects them.
public struct CertificateTemplate: Sendable {
    public var commonName: String
    public var organization: String?
    public var notBefore: Date
    public var notAfter: Date
    public var isCA: Bool
    public var pathLength: Int?
    public var keyUsage: KeyUsage
    public var extendedKeyUsage: ExtendedKeyUsage
    public var uriSANs: [String]
    /// Permitted URI name constraints (hosts, i.e. trust domains), for intermediate CAs.
    public var permittedURIDomains: [String]

    public init(
        commonName: String,
        organization: String? = nil,
        notBefore: Date,
        notAfter: Date,
        isCA: Bool,
        pathLength: Int? = nil,
        keyUsage: KeyUsage,
        extendedKeyUsage: ExtendedKeyUsage = [],
        uriSANs: [String] = [],
        permittedURIDomains: [String] = []
    ) {
        self.commonName = commonName
        self.organization = organization
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.isCA = isCA
        self.pathLength = pathLength
        self.keyUsage = keyUsage
        self.extendedKeyUsage = extendedKeyUsage
        self.uriSANs = uriSANs
        self.permittedURIDomains = permittedURIDomains
    }

    /// Clock skew tolerated between nodes: certificates start this long before issue.
    public static let backdate: TimeInterval = 60

    /// A trust domain's root CA.
    public static func root(trustDomain: TrustDomain, validity: TimeInterval, now: Date = Date()) -> Self {
        CertificateTemplate(
            commonName: "BeeMesh root CA",
            organization: trustDomain.name,
            notBefore: now - backdate,
            notAfter: now + validity,
            isCA: true,
            pathLength: 1,
            keyUsage: [.keyCertSign, .cRLSign, .digitalSignature]
        )
    }

    /// A node's intermediate CA, name-constrained to the trust domain's URIs.
    public static func intermediate(
        trustDomain: TrustDomain,
        nodeName: String,
        validity: TimeInterval,
        now: Date = Date()
    ) -> Self {
        CertificateTemplate(
            commonName: "BeeMesh node CA \(nodeName)",
            organization: trustDomain.name,
            notBefore: now - backdate,
            notAfter: now + validity,
            isCA: true,
            pathLength: 0,
            keyUsage: [.keyCertSign, .cRLSign, .digitalSignature],
            permittedURIDomains: [trustDomain.name]
        )
    }

    /// A workload's X.509-SVID: one URI SAN, cA=false, digitalSignature, serverAuth and clientAuth.
    public static func workload(_ id: SpiffeID, validity: TimeInterval, now: Date = Date()) -> Self {
        CertificateTemplate(
            commonName: id.serviceAccount ?? "workload",
            organization: id.trustDomain.name,
            notBefore: now - backdate,
            notAfter: now + validity,
            isCA: false,
            keyUsage: [.digitalSignature],
            extendedKeyUsage: [.serverAuth, .clientAuth],
            uriSANs: [id.description]
        )
    }
}

extension CertificateTemplate {
    /// Signs the template for `subjectKey`, by `issuer` with `issuerKey` (self-signed when
    /// `issuer` is nil), with a random 127-bit serial and SHA-256.
    public func sign(
        subjectKey: PrivateKey,
        issuer: Certificate?,
        issuerKey: PrivateKey
    ) throws(IdentityError) -> Certificate {
        guard notAfter > notBefore else {
            throw IdentityError(.invalidArgument, "certificate would end before it starts")
        }
        guard let x509 = X509_new() else { throw .openSSL("X509_new") }
        let certificate = Certificate(taking: x509)
        guard X509_set_version(x509, 2) == 1 else { throw .openSSL("X509_set_version") }
        try setRandomSerial(x509)
        let name = X509_NAME_new()!
        defer { X509_NAME_free(name) }
        if let organization {
            X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, organization.clipped, -1, -1, 0)
        }
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, commonName.clipped, -1, -1, 0)
        X509_set_subject_name(x509, name)
        X509_set_issuer_name(x509, issuer.map { X509_get_subject_name($0.pointer) } ?? name)
        ASN1_TIME_set(X509_getm_notBefore(x509), time_t(notBefore.timeIntervalSince1970))
        ASN1_TIME_set(X509_getm_notAfter(x509), time_t(notAfter.timeIntervalSince1970))
        guard X509_set_pubkey(x509, subjectKey.pointer) == 1 else { throw .openSSL("X509_set_pubkey") }

        var context = X509V3_CTX()
        X509V3_set_ctx(&context, issuer?.pointer ?? x509, x509, nil, nil, 0)
        var basic = isCA ? "critical,CA:TRUE" : "critical,CA:FALSE"
        if isCA, let pathLength { basic += ",pathlen:\(pathLength)" }
        try add(NID_basic_constraints, basic, to: x509, context: &context)
        try add(NID_key_usage, "critical," + keyUsage.names.joined(separator: ","), to: x509, context: &context)
        if !extendedKeyUsage.isEmpty {
            try add(NID_ext_key_usage, extendedKeyUsage.names.joined(separator: ","), to: x509, context: &context)
        }
        try add(NID_subject_key_identifier, "hash", to: x509, context: &context)
        if issuer != nil {
            try add(NID_authority_key_identifier, "keyid:always", to: x509, context: &context)
        }
        if !uriSANs.isEmpty {
            let value = uriSANs.map { "URI:\($0)" }.joined(separator: ",")
            // SVIDs have an empty-ish subject, so the SAN is what names them.
            try add(NID_subject_alt_name, "critical," + value, to: x509, context: &context)
        }
        if !permittedURIDomains.isEmpty {
            let value = permittedURIDomains.map { "permitted;URI:\($0)" }.joined(separator: ",")
            try add(NID_name_constraints, "critical," + value, to: x509, context: &context)
        }
        guard X509_sign(x509, issuerKey.pointer, EVP_sha256()) > 0 else { throw .openSSL("X509_sign") }
        return certificate
    }

    private func setRandomSerial(_ x509: OpaquePointer) throws(IdentityError) {
        guard let bn = BN_new() else { throw .openSSL("BN_new") }
        defer { BN_free(bn) }
        guard BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) == 1,
            let serial = BN_to_ASN1_INTEGER(bn, nil)
        else { throw .openSSL("random serial") }
        defer { ASN1_INTEGER_free(serial) }
        X509_set_serialNumber(x509, serial)
    }

    private func add(
        _ nid: Int32,
        _ value: String,
        to x509: OpaquePointer,
        context: inout X509V3_CTX
    ) throws(IdentityError) {
        guard let ext = X509V3_EXT_nconf_nid(nil, &context, nid, value) else {
            throw .openSSL("extension \(String(cString: OBJ_nid2sn(nid))) = \(value)")
        }
        defer { X509_EXTENSION_free(ext) }
        guard X509_add_ext(x509, ext, -1) == 1 else { throw .openSSL("X509_add_ext") }
    }
}

extension String {
    /// X.509 name attributes are limited to 64 characters.
    fileprivate var clipped: String { String(prefix(64)) }
}
