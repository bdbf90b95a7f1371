import ArgumentParser
import Foundation
import MeshIdentity

struct CACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Create and inspect the trust domain's certificate authorities and workload identities.",
        subcommands: [Init.self, Intermediate.self, Issue.self, Inspect.self]
    )

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a trust domain's root CA (ECDSA P-256, 10 years): DIR/ca.pem, DIR/ca.key (0600)."
        )

        @Option(help: "Trust domain name, e.g. example.org.")
        var trustDomain: String
        @Option(help: "Directory to write the root CA into.")
        var dir: String
        @Option(help: "Validity of the root.")
        var ttl = TTL(seconds: 10 * 365 * 86_400)
        @Flag(help: "Replace an existing CA in DIR.")
        var force = false

        func run() throws {
            try runReporting { () throws(IdentityError) in
                if !force, FileManager.default.fileExists(atPath: dir + "/" + CertificateAuthority.keyFile) {
                    throw IdentityError(.invalidArgument, "\(dir) already holds a CA key; pass --force to replace it")
                }
                let ca = try CertificateAuthority.createRoot(
                    trustDomain: try TrustDomain(trustDomain),
                    validity: ttl.seconds
                )
                try ca.write(to: dir)
                print(
                    "created root CA for trust domain \(trustDomain) in \(dir) (valid until \(ca.certificate.notAfter))"
                )
            }
        }
    }

    struct Intermediate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a node CA signed by the root, name-constrained to the trust domain's URIs."
        )

        @Option(help: "Root CA directory.")
        var dir: String
        @Option(help: "Node name.")
        var name: String
        @Option(help: "Directory to write the node CA into.")
        var out: String
        @Option(help: "Validity.")
        var ttl = TTL(seconds: 720 * 3600)

        func run() throws {
            try runReporting { () throws(IdentityError) in
                let root = try CertificateAuthority.load(directory: dir)
                let node = try root.issueIntermediate(nodeName: name, validity: ttl.seconds)
                try node.write(to: out)
                print("created node CA \(name) in \(out) (valid until \(node.certificate.notAfter))")
            }
        }
    }

    struct Issue: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a workload X.509-SVID: OUT/cert.pem (leaf + chain), OUT/key.pem (0600), OUT/bundle.pem."
        )

        @Option(help: "Root CA directory (its bundle is written to OUT).")
        var dir: String
        @Option(help: "spiffe://TD/ns/NS/sa/SA")
        var spiffeId: String
        @Option(help: "Directory to write the identity into.")
        var out: String
        @Option(help: "Validity.")
        var ttl = TTL(seconds: 24 * 3600)
        @Option(help: "Node CA directory to sign with instead of the root.")
        var issuer: String?

        func run() throws {
            try runReporting { () throws(IdentityError) in
                let id = try SpiffeID(spiffeId)
                let signer = try CertificateAuthority.load(directory: issuer ?? dir)
                if issuer != nil {
                    let root = try CertificateAuthority.load(directory: dir)
                    guard root.certificate.sha256Fingerprint == signer.bundle.anchors[0].sha256Fingerprint else {
                        throw IdentityError(.invalidArgument, "\(issuer!) was not issued under the root in \(dir)")
                    }
                }
                let credentials = try signer.issueWorkload(id, validity: ttl.seconds)
                try credentials.write(to: out)
                print("issued \(id) in \(out) (valid until \(credentials.leaf.notAfter))")
            }
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a certificate file's SPIFFE ID, issuer chain, validity and key type."
        )

        @Argument(help: "A PEM file: a leaf followed by its chain, or a CA certificate.")
        var file: String

        func run() throws {
            try runReporting { () throws(IdentityError) in
                let chain = try Certificate.parseChain(pem: try PEMFile.read(file))
                let now = Date()
                for (index, certificate) in chain.enumerated() {
                    let role = certificate.isCA ? "CA" : "leaf"
                    print(index == 0 ? "certificate (\(role))" : "issued by [\(index)] (\(role))")
                    if let id = certificate.spiffeID {
                        print("  SPIFFE ID:  \(id)")
                    } else {
                        print("  URI SANs:   \(certificate.uriSANs)")
                    }
                    print("  subject:    \(certificate.subject)")
                    print("  issuer:     \(certificate.issuer)")
                    let remaining = certificate.notAfter.timeIntervalSince(now)
                    let state = remaining < 0 ? "EXPIRED" : "\(DurationString.format(remaining)) left"
                    print("  validity:   \(certificate.notBefore) .. \(certificate.notAfter) (\(state))")
                    print("  key:        \(certificate.publicKeyType)")
                    print("  serial:     \(certificate.serialNumber)")
                    print("  sha256:     \(certificate.sha256Fingerprint)")
                }
                let bundlePath = (file as NSString).deletingLastPathComponent + "/bundle.pem"
                if let leafID = chain[0].spiffeID, !chain[0].isCA, FileManager.default.fileExists(atPath: bundlePath) {
                    let anchors = try Certificate.parseChain(pem: try PEMFile.read(bundlePath))
                    let bundle = try TrustBundle(trustDomain: leafID.trustDomain, anchors: anchors)
                    switch bundle.verify(chain: chain) {
                    case .success: print("verified against \(bundlePath): ok")
                    case .failure(let failure): print("verified against \(bundlePath): FAILED \(failure)")
                    }
                }
            }
        }
    }
}
