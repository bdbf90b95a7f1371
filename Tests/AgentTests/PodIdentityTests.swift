import Foundation
import Logging
import MeshIdentity
import MeshTestSupport
import Testing

@testable import Agent

/// A pod's identity files: issued from the node CA for the pod's service account, and
/// replaced when half their lifetime is left, not before (decided by `PodLifecycle` on
/// virtual time, carried out by `PodRuntime`). Needs root (the files are given to the
/// sidecar's uid).
@Suite struct PodIdentityTests {
    @Test func anIdentityIsRenewedAtHalfLifeAndNotBefore() throws {
        let directory = TemporaryDirectory()
        let root = try CertificateAuthority.createRoot(trustDomain: try TrustDomain("pods.test"))
        let nodeCA = try root.issueIntermediate(nodeName: "node-1")
        let reconciler = try Reconciler.forTests(in: directory.path, nodeCA: nodeCA, certificateTTL: 4)
        let yaml = """
            apiVersion: v1
            kind: Pod
            metadata: {name: orders, namespace: shop}
            spec: {serviceAccountName: orders, containers: [{name: web, image: i}]}
            """
        let pod = try #require(DesiredPod.plan(try KubernetesObject.parse(yaml: yaml, file: "pod.yaml")).first)
        let identity = "\(directory.path)/pods/\(pod.directoryName)/identity"
        try FileManager.default.createDirectory(atPath: identity, withIntermediateDirectories: true)
        try reconciler.runtime.issueIdentity(for: pod, into: identity)

        func leaf() throws -> Certificate {
            try #require(try Certificate.parseChain(pem: try PEMFile.read(identity + "/cert.pem")).first)
        }
        let first = try leaf()
        #expect(first.spiffeID?.description == "spiffe://pods.test/ns/shop/sa/orders")
        let key = try FileManager.default.attributesOfItem(atPath: identity + "/key.pem")
        #expect((key[.posixPermissions] as? Int) == 0o600 && (key[.ownerAccountID] as? Int) == 1337)
        let loaded = try WorkloadCredentials.load(
            certificate: identity + "/cert.pem",
            key: identity + "/key.pem",
            bundle: identity + "/bundle.pem"
        )
        #expect(loaded.leaf.serialNumber == first.serialNumber, "cert, key and bundle belong together")

        var lifecycle = PodLifecycle(settings: .init(certificateTTL: 4, caNotAfter: nodeCA.certificate.notAfter))
        func pass(at now: Date) throws -> [PodLifecycle.Directive] {
            let observation = PodLifecycle.Observation(
                containers: [DesiredPod.sidecarName: .running, "web": .running],
                identityExpiry: try leaf().notAfter,
                agentSocketOpen: true
            )
            return lifecycle.pass(
                desired: [pod],
                existing: [pod.podmanName: pod.specDigest],
                observed: [pod.podmanName: observation],
                now: now
            )
        }
        let issued = Date()
        #expect(try pass(at: issued) == [], "4 s left of 4 s: not due")
        #expect(try pass(at: issued + 2.2) == [.renewIdentity(pod)], "under half left: renewed")
        reconciler.runtime.renewIdentity(pod)
        #expect(try leaf().serialNumber != first.serialNumber)
        // The new certificate was issued now, on the real clock.
        #expect(try pass(at: Date()) == [], "just renewed: not due again")
    }
}
