import Foundation
import MeshIdentity
import MeshTLS
import NIOCore
import NIOPosix
import Testing

/// Every way a peer can fail mutual authentication is refused with its own reason, and
/// not one plaintext byte reaches the application behind the refusing side.
@Suite(.serialized) struct RejectionMatrixTests {
    let harness = try! TLSHarness()

    /// Runs one client against an `orders` server and returns what the server saw.
    private func attempt(
        client credentials: WorkloadCredentials,
        expecting: SpiffeID? = nil,
        server serverCredentials: WorkloadCredentials? = nil
    ) async throws -> (server: Observations, client: Observations) {
        let serverSide = Observations()
        let clientSide = Observations()
        let server = try await harness.server(
            try serverCredentials ?? harness.credentials("orders"),
            observations: serverSide
        )
        defer { server.close(promise: nil) }
        // The client trusts the server's root, whatever its own certificate is.
        let client = try await harness.client(
            WorkloadCredentials(chain: credentials.chain, key: credentials.key, bundle: harness.root.bundle),
            expecting: expecting ?? harness.id("orders"),
            to: server,
            observations: clientSide
        )
        _ = try? await client.closeFuture.get()
        _ = await serverSide.wait { !$0.handshakeErrors.isEmpty || !$0.received.isEmpty }
        return (serverSide, clientSide)
    }

    @Test func validPeersTalk() async throws {
        let serverSide = Observations()
        let clientSide = Observations()
        let listener = try await harness.server(try harness.credentials("orders"), observations: serverSide)
        defer { listener.close(promise: nil) }
        let channel = try await harness.client(
            try harness.credentials("frontend"),
            expecting: harness.id("orders"),
            to: listener,
            observations: clientSide
        )
        defer { channel.close(promise: nil) }
        #expect(await serverSide.wait { $0.received == "hello" })
        #expect(serverSide.peers == [harness.id("frontend")])
        #expect(clientSide.peers == [harness.id("orders")])
        #expect(serverSide.handshakeErrors.isEmpty)
    }

    @Test func unknownCA() async throws {
        let stranger = try CertificateAuthority.createRoot(trustDomain: harness.domain)
        let (server, _) = try await attempt(client: try stranger.issueWorkload(harness.id("frontend")))
        #expect(server.handshakeErrors.map(\.reason) == [.certificate(.unknownCA)])
        #expect(server.received.isEmpty)
    }

    @Test func anotherTrustDomain() async throws {
        let foreign = try SpiffeID("spiffe://other.org/ns/default/sa/frontend")
        let credentials = try harness.root.issue(.workload(foreign, validity: 3600), key: try PrivateKey.generateP256())
        let (server, _) = try await attempt(client: credentials)
        #expect(server.handshakeErrors.map(\.reason) == [.certificate(.foreignTrustDomain)])
        #expect(server.received.isEmpty)
    }

    @Test func expired() async throws {
        var template = CertificateTemplate.workload(harness.id("frontend"), validity: 3600)
        template.notBefore = Date() - 7200
        template.notAfter = Date() - 3600
        let (server, _) = try await attempt(
            client: try harness.node.issue(template, key: try PrivateKey.generateP256())
        )
        #expect(server.handshakeErrors.map(\.reason) == [.certificate(.expired)])
        #expect(server.received.isEmpty)
    }

    @Test func notYetValid() async throws {
        var template = CertificateTemplate.workload(harness.id("frontend"), validity: 3600)
        template.notBefore = Date() + 3600
        template.notAfter = Date() + 7200
        let (server, _) = try await attempt(
            client: try harness.node.issue(template, key: try PrivateKey.generateP256())
        )
        #expect(server.handshakeErrors.map(\.reason) == [.certificate(.notYetValid)])
        #expect(server.received.isEmpty)
    }

    @Test func moreThanOneURISAN() async throws {
        var template = CertificateTemplate.workload(harness.id("frontend"), validity: 3600)
        template.uriSANs.append(harness.id("orders").description)
        let (server, _) = try await attempt(
            client: try harness.node.issue(template, key: try PrivateKey.generateP256())
        )
        #expect(server.handshakeErrors.map(\.reason) == [.certificate(.multipleURISANs)])
        #expect(server.received.isEmpty)
    }

    @Test func caCertificateAsLeaf() async throws {
        let node = harness.node
        let credentials = WorkloadCredentials(chain: node.chain, key: node.key, bundle: node.bundle)
        let (server, _) = try await attempt(client: credentials)
        #expect(server.handshakeErrors.map(\.reason) == [.certificate(.caAsLeaf)])
        #expect(server.received.isEmpty)
    }

    @Test func clientRefusesServerWithUnexpectedIdentity() async throws {
        let (server, client) = try await attempt(
            client: try harness.credentials("frontend"),
            expecting: harness.id("orders"),
            server: try harness.credentials("payments")
        )
        #expect(client.handshakeErrors.map(\.reason) == [.certificate(.unexpectedIdentity)])
        #expect(server.received.isEmpty)
        #expect(server.peers.isEmpty)
    }

    @Test func clientRefusesExpiredServer() async throws {
        var template = CertificateTemplate.workload(harness.id("orders"), validity: 3600)
        template.notBefore = Date() - 7200
        template.notAfter = Date() - 3600
        let expiredServer = try harness.node.issue(template, key: try PrivateKey.generateP256())
        let (server, client) = try await attempt(client: try harness.credentials("frontend"), server: expiredServer)
        #expect(client.handshakeErrors.map(\.reason) == [.certificate(.expired)])
        #expect(server.received.isEmpty)
    }

    @Test func handshakeTimeout() async throws {
        let observations = Observations()
        let server = try await harness.server(
            try harness.credentials("orders"),
            observations: observations,
            handshakeTimeout: .milliseconds(200)
        )
        defer { server.close(promise: nil) }
        // A TCP client that never speaks TLS.
        let silent = try await ClientBootstrap(group: TLSHarness.group).connect(to: server.localAddress!).get()
        defer { silent.close(promise: nil) }
        #expect(await observations.wait { !$0.handshakeErrors.isEmpty })
        #expect(observations.handshakeErrors.map(\.reason) == [.timeout])
    }
}
