import Foundation
import MeshIdentity
import Testing

@Suite struct CertificateAuthorityTests {
    let domain = try! TrustDomain("example.org")
    let orders = try! SpiffeID("spiffe://example.org/ns/default/sa/orders")

    @Test func rootIsP256CAForTenYears() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        let cert = root.certificate
        #expect(cert.isCA)
        #expect(cert.publicKeyType == "ECDSA P-256")
        #expect(cert.keyUsage?.contains(.keyCertSign) == true)
        let years = cert.notAfter.timeIntervalSince(cert.notBefore) / (365 * 86_400)
        #expect(years > 9.99 && years < 10.01)
        #expect(cert.uriSANs == ["spiffe://example.org"])
    }

    @Test func leafFollowsX509SVIDRules() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        let node = try root.issueIntermediate(nodeName: "node-1")
        let svid = try node.issueWorkload(orders, validity: 3600)
        let leaf = svid.leaf
        #expect(leaf.uriSANs == [orders.description])
        #expect(!leaf.isCA)
        #expect(leaf.keyUsage == [.digitalSignature])
        #expect(leaf.extendedKeyUsage == [.serverAuth, .clientAuth])
        #expect(leaf.matches(svid.key))
        #expect(svid.chain.count == 2)
        #expect(svid.chain[1].subject == node.certificate.subject)
        #expect(try svid.bundle.verify(chain: svid.chain).get() == orders)
        // The certificate's SubjectPublicKeyInfo is the key's (the DHT's node IDs are
        // the hash of one, checked against the other).
        #expect(!leaf.publicKeyDER.isEmpty && leaf.publicKeyDER == svid.key.publicKeyDER)
        #expect(node.certificate.publicKeyDER != leaf.publicKeyDER)
    }

    @Test func leafNeverOutlivesItsIssuer() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        let node = try root.issueIntermediate(nodeName: "n", validity: 3600)
        let svid = try node.issueWorkload(orders, validity: 86_400)
        #expect(svid.leaf.notAfter <= node.certificate.notAfter)
    }

    @Test func refusesToIssueForAnotherTrustDomain() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        #expect(throws: IdentityError.self) {
            try root.issueWorkload(try SpiffeID("spiffe://other.org/ns/a/sa/b"))
        }
    }

    @Test func writesAndLoadsDirectoriesWithPrivateKeyMode0600() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("beemesh-ca-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        try root.write(to: dir)
        let attributes = try FileManager.default.attributesOfItem(atPath: dir + "/ca.key")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let loaded = try CertificateAuthority.load(directory: dir)
        #expect(loaded.trustDomain == domain)
        #expect(loaded.certificate.sha256Fingerprint == root.certificate.sha256Fingerprint)

        let svid = try loaded.issueWorkload(orders)
        try svid.write(to: dir + "/orders")
        let keyAttributes = try FileManager.default.attributesOfItem(atPath: dir + "/orders/key.pem")
        #expect((keyAttributes[.posixPermissions] as? Int) == 0o600)
        let reloaded = try WorkloadCredentials.load(
            certificate: dir + "/orders/cert.pem",
            key: dir + "/orders/key.pem",
            bundle: dir + "/orders/bundle.pem"
        )
        #expect(reloaded.spiffeID == orders)
    }

    @Test func loadRejectsAKeyThatDoesNotMatch() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("beemesh-ca-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        try root.issueWorkload(orders).write(to: dir)
        try PEMFile.write(dir + "/key.pem", try PrivateKey.generateP256().pemEncoded, mode: 0o600)
        #expect {
            try WorkloadCredentials.load(
                certificate: dir + "/cert.pem",
                key: dir + "/key.pem",
                bundle: dir + "/bundle.pem"
            )
        } throws: { ($0 as? IdentityError)?.code == .keyMismatch }
    }
}

/// Chain and X.509-SVID verification: each way a peer certificate can be wrong maps to
/// exactly one reason.
@Suite struct VerificationTests {
    let domain = try! TrustDomain("example.org")
    let orders = try! SpiffeID("spiffe://example.org/ns/default/sa/orders")

    private func reason(_ result: Result<SpiffeID, VerificationFailure>) -> VerificationFailure.Reason? {
        if case .failure(let failure) = result { return failure.reason }
        return nil
    }

    @Test func unknownCA() throws {
        let ours = try CertificateAuthority.createRoot(trustDomain: domain)
        let theirs = try CertificateAuthority.createRoot(trustDomain: domain)
        let svid = try theirs.issueWorkload(orders)
        #expect(reason(ours.bundle.verify(chain: svid.chain)) == .unknownCA)
    }

    @Test func expiredAndNotYetValid() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        let svid = try root.issueWorkload(orders, validity: 3600)
        #expect(reason(root.bundle.verify(chain: svid.chain, at: Date() + 7200)) == .expired)
        #expect(reason(root.bundle.verify(chain: svid.chain, at: Date() - 7200)) == .notYetValid)
    }

    @Test func foreignTrustDomainSignedByOurRoot() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        let foreign = try SpiffeID("spiffe://other.org/ns/default/sa/orders")
        let svid = try root.issue(.workload(foreign, validity: 3600), key: try PrivateKey.generateP256())
        #expect(reason(root.bundle.verify(chain: svid.chain)) == .foreignTrustDomain)
    }

    @Test func nodeCAIsNameConstrainedToItsTrustDomain() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        let node = try root.issueIntermediate(nodeName: "n")
        let foreign = try SpiffeID("spiffe://other.org/ns/default/sa/orders")
        let svid = try node.issue(.workload(foreign, validity: 3600), key: try PrivateKey.generateP256())
        #expect(reason(root.bundle.verify(chain: svid.chain)) == .nameConstraints)
    }

    @Test func multipleURISANs() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        var template = CertificateTemplate.workload(orders, validity: 3600)
        template.uriSANs.append("spiffe://example.org/ns/default/sa/admin")
        let svid = try root.issue(template, key: try PrivateKey.generateP256())
        #expect(reason(root.bundle.verify(chain: svid.chain)) == .multipleURISANs)
    }

    @Test func noURISAN() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        var template = CertificateTemplate.workload(orders, validity: 3600)
        template.uriSANs = []
        let svid = try root.issue(template, key: try PrivateKey.generateP256())
        #expect(reason(root.bundle.verify(chain: svid.chain)) == .noURISAN)
    }

    @Test func caCertificateAsLeaf() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        let node = try root.issueIntermediate(nodeName: "n")
        #expect(reason(root.bundle.verify(chain: node.chain)) == .caAsLeaf)
    }

    @Test func leafThatCanSignCertificates() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        var template = CertificateTemplate.workload(orders, validity: 3600)
        template.keyUsage = [.digitalSignature, .keyCertSign]
        let svid = try root.issue(template, key: try PrivateKey.generateP256())
        #expect(reason(root.bundle.verify(chain: svid.chain)) == .badKeyUsage)
    }

    @Test func unexpectedIdentity() throws {
        let root = try CertificateAuthority.createRoot(trustDomain: domain)
        let svid = try root.issueWorkload(orders)
        let payments = try SpiffeID("spiffe://example.org/ns/default/sa/payments")
        #expect(reason(root.bundle.verify(chain: svid.chain, expected: payments)) == .unexpectedIdentity)
        #expect(try root.bundle.verify(chain: svid.chain, expected: orders).get() == orders)
    }
}
