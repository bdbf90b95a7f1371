import Logging
import MeshIdentity

@testable import Agent

extension Reconciler {
    /// A reconciler whose state lives under `directory` and whose podman socket answers
    /// nothing (it is never started: these tests drive its store and identities).
    static func forTests(
        in directory: String,
        nodeCA: CertificateAuthority,
        certificateTTL: Double = 3600,
        podSockets: PodSockets? = nil
    ) throws -> Reconciler {
        try Reconciler(
            settings: Reconciler.Settings(
                podmanSocket: directory + "/none.sock",
                sidecarImage: "image",
                proxyBinary: "/bin/false",
                runDirectory: directory + "/pods",
                policies: directory + "/policies",
                certificateTTL: certificateTTL,
                node: "node-1",
                agentID: "test"
            ),
            store: try WorkloadStore(directory: directory + "/workloads"),
            nodeCA: nodeCA,
            podSockets: podSockets,
            logger: Logger(label: "test")
        )
    }
}
