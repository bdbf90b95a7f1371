import Foundation
import Logging
import MeshIdentity
import MeshTLS
import MeshTestSupport
import NIOCore
import Testing

@Suite struct TLSHalfCloseTests {
    let harness = try! TLSHarness()

    /// The client sends close_notify after its request; the server still answers on the
    /// open direction, then sends its own close_notify; both sides see a clean end.
    @Test func closeNotifyBothWays() async throws {
        let serverSide = Observations()
        let clientSide = Observations()
        let listener = try await harness.server(
            try harness.credentials("orders"),
            observations: serverSide,
            replyOnInputClosed: "response after half-close"
        )
        defer { listener.close(promise: nil) }
        let channel = try await harness.client(
            try harness.credentials("frontend"),
            expecting: harness.id("orders"),
            to: listener,
            observations: clientSide,
            greeting: "request"
        )
        #expect(await serverSide.wait { $0.received == "request" })
        try await channel.close(mode: .output)
        #expect(await serverSide.wait { $0.inputClosed })
        #expect(await clientSide.wait { $0.received == "response after half-close" && $0.inputClosed })
        #expect(serverSide.otherErrors.isEmpty, "no truncation: \(serverSide.otherErrors)")
        #expect(clientSide.otherErrors.isEmpty, "no truncation: \(clientSide.otherErrors)")
        try? await channel.close()
    }
}

@Suite struct CredentialReloadTests {
    let harness = try! TLSHarness()

    @Test func reloadsChangedFilesAndKeepsLastGoodOnBrokenOnes() throws {
        let directory = TemporaryDirectory()
        try harness.credentials("orders").write(to: directory.path)
        let paths = CredentialPaths(
            certificate: directory.path + "/cert.pem",
            privateKey: directory.path + "/key.pem",
            trustBundle: directory.path + "/bundle.pem"
        )
        let source = try TLSCredentialsSource(paths: paths, logger: Logger(label: "test"))
        let first = source.current.credentials.leaf.serialNumber
        #expect(source.reloadIfChanged() == false)

        try harness.credentials("orders").write(to: directory.path)
        #expect(source.reloadIfChanged() == true)
        let second = source.current.credentials.leaf.serialNumber
        #expect(second != first)

        // A new certificate without its key: refused, the last good context stays.
        try PEMFile.write(paths.certificate, try harness.credentials("orders").chain.map(\.pemEncoded).joined())
        #expect(source.reloadIfChanged() == false)
        #expect(source.current.credentials.leaf.serialNumber == second)
    }

    @Test func followsSymlinkSwaps() throws {
        let directory = TemporaryDirectory()
        try harness.credentials("orders").write(to: directory.path + "/v1")
        try harness.credentials("orders").write(to: directory.path + "/v2")
        try FileManager.default.createSymbolicLink(atPath: directory.path + "/current", withDestinationPath: "v1")
        let paths = CredentialPaths(
            certificate: directory.path + "/current/cert.pem",
            privateKey: directory.path + "/current/key.pem",
            trustBundle: directory.path + "/current/bundle.pem"
        )
        let source = try TLSCredentialsSource(paths: paths, logger: Logger(label: "test"))
        let first = source.current.credentials.leaf.serialNumber
        try FileManager.default.createSymbolicLink(atPath: directory.path + "/next", withDestinationPath: "v2")
        #expect(rename(directory.path + "/next", directory.path + "/current") == 0)
        #expect(source.reloadIfChanged())
        #expect(source.current.credentials.leaf.serialNumber != first)
    }
}
