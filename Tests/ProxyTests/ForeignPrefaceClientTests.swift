import Foundation
import MeshIdentity
import MeshTestSupport
import NIOConcurrencyHelpers
import NIOCore
import Proxy
import Testing

/// `openssl s_client` as the client sidecar: it speaks the preface itself and reaches the
/// app through the server sidecar's mTLS listener; with a leaf from another CA it never
/// gets past the handshake.
@Suite(.serialized) struct ForeignPrefaceClientTests {
    private func prefaceBytes(port: Int) throws -> [UInt8] {
        var buffer = ByteBuffer()
        try PrefaceRequest(service: "orders.default", port: UInt16(port)).encode(into: &buffer)
        buffer.writeString("ping through the mesh\n")
        return Array(buffer.readableBytesView)
    }

    private func sClient(port: Int, credentials directory: String, input: [UInt8]) async throws -> String {
        let arguments = [
            "openssl", "s_client", "-quiet", "-tls1_3", "-alpn", "beemesh/1",
            "-connect", "127.0.0.1:\(port)",
            "-cert", directory + "/cert.pem", "-cert_chain", directory + "/cert.pem", "-key", directory + "/key.pem",
            "-CAfile", directory + "/bundle.pem",
        ]
        return try await blocking { try runProcess(arguments, input: input, timeout: 3).output }
    }

    @Test func validLeafReachesTheApp() async throws {
        let app = try await TestApp.start { TestApp.Echo() }
        let appPort = app.localAddress!.port!
        let pair = try await MeshPair(routes: [], allowedPorts: [appPort])
        let output = try await sClient(
            port: pair.serverAddresses.inbound.port!,
            credentials: pair.directory + "/frontend",
            input: try prefaceBytes(port: appPort)
        )
        // The answer frame (BM, version 1, length 3, status ok, reason none), then the echo.
        #expect(
            output.contains("BM\u{01}\u{00}\u{03}\u{00}\u{00}\u{00}ping through the mesh"),
            "s_client said: \(output)"
        )
        await pair.shutdown()
        try await app.close()
    }

    @Test func leafFromAnotherCAIsRefused() async throws {
        let accepted = NIOLockedValueBox(0)
        let app = try await TestApp.start(accepted: accepted) { TestApp.Echo() }
        let appPort = app.localAddress!.port!
        let pair = try await MeshPair(routes: [], allowedPorts: [appPort])
        let stranger = TemporaryDirectory()
        let otherRoot = try CertificateAuthority.createRoot(trustDomain: try TrustDomain("example.org"))
        let leaf = try otherRoot.issueWorkload(try SpiffeID("spiffe://example.org/ns/default/sa/frontend"))
        // It trusts our server (our bundle), but its own leaf chains to another root.
        try WorkloadCredentials(chain: leaf.chain, key: leaf.key, bundle: pair.root.bundle).write(to: stranger.path)
        let output = try await sClient(
            port: pair.serverAddresses.inbound.port!,
            credentials: stranger.path,
            input: try prefaceBytes(port: appPort)
        )
        #expect(!output.contains("ping through the mesh"))
        #expect(output.contains("alert"), "s_client said: \(output)")
        #expect(accepted.withLockedValue { $0 } == 0)
        await pair.shutdown()
        try await app.close()
    }
}
