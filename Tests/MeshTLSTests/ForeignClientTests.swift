import Foundation
import MeshIdentity
import MeshTLS
import MeshTestSupport
import Testing

/// `openssl s_client` as a foreign peer: the cases a Swift client of ours cannot produce
/// (no certificate at all, another ALPN), and a valid foreign handshake.
@Suite(.serialized) struct ForeignClientTests {
    let harness = try! TLSHarness()
    let directory = TemporaryDirectory()

    private func sClient(_ port: Int, _ extra: [String]) async throws -> String {
        let arguments = [
            "openssl", "s_client", "-quiet", "-tls1_3", "-connect", "127.0.0.1:\(port)",
            "-CAfile", directory.path + "/bundle.pem", "-verify_return_error",
        ]
        return try await blocking { try runProcess(arguments + extra, input: Array("hello".utf8), timeout: 5).output }
    }

    private func serve() async throws -> (port: Int, observations: Observations, close: () -> Void) {
        try harness.credentials("frontend").write(to: directory.path)
        let observations = Observations()
        let server = try await harness.server(try harness.credentials("orders"), observations: observations)
        return (server.localAddress!.port!, observations, { server.close(promise: nil) })
    }

    @Test func validForeignClientIsAuthenticated() async throws {
        let (port, observations, close) = try await serve()
        defer { close() }
        let output = try await sClient(
            port,
            [
                "-alpn", "beemesh/1", "-cert", directory.path + "/cert.pem", "-key", directory.path + "/key.pem",
                "-cert_chain", directory.path + "/cert.pem",
            ]
        )
        #expect(await observations.wait { $0.received == "hello" }, "s_client said: \(output)")
        #expect(observations.peers == [harness.id("frontend")])
    }

    /// A server sends its leaf and the intermediates it holds, never the root: every
    /// peer has the root as its anchor, and OpenSSL's automatic chain would otherwise
    /// rebuild (and re-verify) the chain from the trust store on every handshake.
    @Test(arguments: [false, true])
    func serverSendsItsChainWithoutTheRoot(throughIntermediate: Bool) async throws {
        try harness.credentials("frontend").write(to: directory.path)
        let credentials =
            throughIntermediate
            ? try harness.credentials("orders") : try harness.root.issueWorkload(harness.id("orders"))
        let server = try await harness.server(credentials, observations: Observations())
        defer { server.close(promise: nil) }
        let arguments = [
            "openssl", "s_client", "-showcerts", "-tls1_3", "-connect", "127.0.0.1:\(server.localAddress!.port!)",
            "-CAfile", directory.path + "/bundle.pem", "-verify_return_error", "-alpn", "beemesh/1",
            "-cert", directory.path + "/cert.pem", "-key", directory.path + "/key.pem",
            "-cert_chain", directory.path + "/cert.pem",
        ]
        let output = try await blocking { try runProcess(arguments, input: [], timeout: 5).output }
        let sent = output.components(separatedBy: "-----BEGIN CERTIFICATE-----").count - 1
        #expect(sent == (throughIntermediate ? 2 : 1), "s_client said: \(output)")
    }

    @Test func noClientCertificate() async throws {
        let (port, observations, close) = try await serve()
        defer { close() }
        let output = try await sClient(port, ["-alpn", "beemesh/1"])
        #expect(await observations.wait { !$0.handshakeErrors.isEmpty }, "s_client said: \(output)")
        #expect(observations.handshakeErrors.map(\.reason) == [.certificate(.noCertificate)])
        #expect(observations.received.isEmpty)
    }

    @Test func wrongALPN() async throws {
        let (port, observations, close) = try await serve()
        defer { close() }
        let output = try await sClient(
            port,
            [
                "-alpn", "h2", "-cert", directory.path + "/cert.pem", "-key", directory.path + "/key.pem",
                "-cert_chain", directory.path + "/cert.pem",
            ]
        )
        #expect(await observations.wait { !$0.handshakeErrors.isEmpty }, "s_client said: \(output)")
        #expect(observations.handshakeErrors.map(\.reason) == [.alpn])
        #expect(observations.received.isEmpty)
    }

    @Test func tls12IsRefused() async throws {
        let (port, observations, close) = try await serve()
        defer { close() }
        let arguments = [
            "openssl", "s_client", "-quiet", "-tls1_2", "-connect", "127.0.0.1:\(port)",
            "-cert", directory.path + "/cert.pem", "-key", directory.path + "/key.pem",
        ]
        _ = try await blocking { try runProcess(arguments, input: Array("hello".utf8), timeout: 5) }
        #expect(await observations.wait { !$0.handshakeErrors.isEmpty })
        #expect(observations.handshakeErrors.map(\.reason) == [.protocolVersion])
        #expect(observations.received.isEmpty)
    }
}
