import Foundation
import Kademlia
import Logging
import MeshAPI
import MeshConfiguration
import MeshIdentity
import MeshTLS
import MeshTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import Proxy

/// What a sidecar believes of an agent's answer: only records that verify against its
/// own trust bundle, so a broken or hostile agent cannot point it anywhere else.
@Suite struct MeshDiscoveryTests {
    static let root = try! CertificateAuthority.createRoot(trustDomain: try! TrustDomain("discovery.test"))
    static let orders = try! root.issueWorkload(try! SpiffeID("spiffe://discovery.test/ns/default/sa/orders"))
    static let frontend = try! root.issueWorkload(try! SpiffeID("spiffe://discovery.test/ns/default/sa/frontend"))

    static func endpoint(
        _ credentials: WorkloadCredentials,
        _ address: String,
        ports: [UInt16] = [8080],
        expiresIn seconds: Double = 60,
        tamper: Bool = false
    ) throws -> ServiceLookup.Endpoint {
        let now = Date().timeIntervalSince1970
        let record = try SignedServiceRecord.sign(
            ServiceRecord(
                service: "orders",
                namespace: "default",
                endpoint: address,
                ports: ports,
                spiffeID: credentials.spiffeID!.description,
                sequence: 1,
                expires: UInt64((now + seconds) * 1e9)
            ),
            with: credentials
        )
        var value = record.dhtRecord.value
        if tamper { value[40] ^= 0x01 }  // inside the signed bytes
        return ServiceLookup.Endpoint(
            endpoint: address,
            ports: ports,
            identity: credentials.spiffeID!.description,
            weight: 100,
            sequence: 1,
            expires: Date(timeIntervalSince1970: now + seconds),
            record: Data(value).base64EncodedString()
        )
    }

    @Test func onlyRecordsThatVerifyHereBecomeEndpoints() throws {
        let lookup = ServiceLookup(
            service: "orders.default",
            endpoints: [
                try Self.endpoint(Self.orders, "10.0.0.1:15008"),
                try Self.endpoint(Self.orders, "10.0.0.2:15008", ports: [8080, 9090]),
                try Self.endpoint(Self.frontend, "10.6.6.6:15008"),  // not allowed to serve orders
                try Self.endpoint(Self.orders, "10.6.6.7:15008", tamper: true),
                try Self.endpoint(Self.orders, "10.6.6.8:15008", expiresIn: -1),
                ServiceLookup.Endpoint(
                    endpoint: "10.6.6.9:15008",
                    ports: [8080],
                    identity: "x",
                    weight: 1,
                    sequence: 1,
                    expires: Date(),
                    record: "not base64!"
                ),
            ],
            hops: 1,
            messages: 2
        )
        let resolution = MeshDiscovery.verify(
            lookup,
            bundle: Self.root.bundle,
            cacheTTL: 5,
            logger: Logger(label: "test")
        )
        #expect(resolution.endpoints.map(\.endpoint.address.description) == ["10.0.0.1:15008", "10.0.0.2:15008"])
        #expect(resolution.rotation(for: 8080)?.endpoints.count == 2)
        #expect(resolution.rotation(for: 9090)?.endpoints.map(\.address.description) == ["10.0.0.2:15008"])
        #expect(resolution.rotation(for: 443) == nil)
        #expect(resolution.endpoints.allSatisfy { $0.endpoint.identity == Self.orders.spiffeID })
        #expect(resolution.freshUntil <= NIODeadline.now() + .milliseconds(5000))
    }

    @Test func anAnswerIsReusedNoLongerThanItsEarliestRecordLives() throws {
        let lookup = ServiceLookup(
            service: "orders.default",
            endpoints: [try Self.endpoint(Self.orders, "10.0.0.1:15008", expiresIn: 2)],
            hops: 1,
            messages: 1
        )
        let resolution = MeshDiscovery.verify(
            lookup,
            bundle: Self.root.bundle,
            cacheTTL: 30,
            logger: Logger(label: "t")
        )
        #expect(resolution.freshUntil <= NIODeadline.now() + .milliseconds(2000))
        let foreign = try CertificateAuthority.createRoot(trustDomain: try TrustDomain("discovery.test"))
        let none = MeshDiscovery.verify(lookup, bundle: foreign.bundle, cacheTTL: 30, logger: Logger(label: "t"))
        #expect(none.endpoints.isEmpty, "another root of the same name is not ours")
    }
}

/// A stale answer is used at once while one lookup refreshes it: a lookup that waits
/// on a silent DHT node must hold up neither a connection nor a DNS answer.
@Suite struct MeshDiscoveryRefreshTests {
    /// An agent's `/dht/services/…` on a TCP port: answers each request with the
    /// lookup it is given, after `hold` is released when one is set.
    final class FakeAgent: @unchecked Sendable {
        let listener: Int32
        let port: Int
        private let lock = NSLock()
        private var answer: ServiceLookup
        private var holding: DispatchSemaphore?
        private(set) var requests = 0

        init(answer: ServiceLookup) throws {
            self.answer = answer
            listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            port = try bindLoopback(listener, listening: 8)
            let thread = Thread { [self] in serve() }
            thread.start()
        }

        /// From now on requests wait for `release` and then get `lookup`.
        func hold(then lookup: ServiceLookup) -> DispatchSemaphore {
            let semaphore = DispatchSemaphore(value: 0)
            lock.withLock {
                answer = lookup
                holding = semaphore
            }
            return semaphore
        }

        var requestCount: Int { lock.withLock { requests } }

        private func serve() {
            while true {
                let connection = accept(listener, nil, nil)
                guard connection >= 0 else { return }
                var buffer = [UInt8](repeating: 0, count: 4096)
                _ = recv(connection, &buffer, buffer.count, 0)
                let (lookup, semaphore) = lock.withLock {
                    requests += 1
                    return (answer, holding)
                }
                semaphore?.wait()
                let body = (try? MeshJSON.encoder().encode(lookup)) ?? Data()
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n"
                let response = Array((head + "Connection: close\r\n\r\n").utf8) + Array(body)
                _ = response.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                close(connection)
            }
        }
    }

    static func lookup(_ address: String) throws -> ServiceLookup {
        ServiceLookup(
            service: "orders.default",
            endpoints: [try MeshDiscoveryTests.endpoint(MeshDiscoveryTests.orders, address)],
            hops: 1,
            messages: 1
        )
    }

    @Test func aStaleAnswerIsUsedAtOnceWhileOneLookupRefreshesIt() async throws {
        let directory = TemporaryDirectory()
        let credentials = MeshDiscoveryTests.frontend
        try PEMFile.write(directory.path + "/cert.pem", credentials.chain.map(\.pemEncoded).joined(), mode: 0o644)
        try PEMFile.write(directory.path + "/key.pem", credentials.key.pemEncoded, mode: 0o600)
        try PEMFile.write(directory.path + "/bundle.pem", credentials.bundle.pemEncoded, mode: 0o644)
        let agent = try FakeAgent(answer: try Self.lookup("10.0.0.1:15008"))
        let paths = CredentialPaths(
            certificate: directory.path + "/cert.pem",
            privateKey: directory.path + "/key.pem",
            trustBundle: directory.path + "/bundle.pem"
        )
        var configuration = ProxyConfiguration(
            identity: .init(
                certificate: paths.certificate,
                privateKey: paths.privateKey,
                trustBundle: paths.trustBundle
            )
        )
        configuration.discovery.cacheTTL = 0.001
        let discovery = try MeshDiscovery(
            configuration: configuration.discovery,
            agent: "http://127.0.0.1:\(agent.port)",
            inbound: configuration.inbound,
            credentials: try TLSCredentialsSource(paths: paths, logger: Logger(label: "test")),
            logger: Logger(label: "test")
        )
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        discovery.start(on: loop)  // no publish: only its lookup pool starts
        func resolve() async throws -> [String] {
            try await discovery.resolve("orders.default", on: loop).get().endpoints.map {
                $0.endpoint.address.description
            }
        }

        #expect(try await resolve() == ["10.0.0.1:15008"], "never resolved: the lookup is awaited")
        #expect(agent.requestCount == 1)
        let release = agent.hold(then: try Self.lookup("10.0.0.2:15008"))
        // MeshDiscovery reads the wall clock (no clock to inject): 5 ms make the
        // answer stale (cacheTTL 1 ms).
        try await Task.sleep(for: .milliseconds(5))
        // The agent holds every lookup now: these answer from the stale entry (within
        // 5 s, or the test fails rather than hangs) while a refresh waits on the agent.
        let answers = NIOLockedValueBox<[[String]]>([])
        for _ in 0..<2 {
            discovery.resolve("orders.default", on: loop).whenSuccess { resolution in
                answers.withLockedValue { $0.append(resolution.endpoints.map { $0.endpoint.address.description }) }
            }
        }
        defer { for _ in 0..<4 { release.signal() } }
        try await waitUntil("two stale answers while the agent holds the lookup", seconds: 5) {
            answers.withLockedValue { $0.count } == 2
        }
        #expect(answers.withLockedValue { $0 } == [["10.0.0.1:15008"], ["10.0.0.1:15008"]])
        try await waitUntil("the refresh reached the agent") { agent.requestCount == 2 }
        release.signal()
        try await waitUntil("the refreshed answer is used", seconds: 10) {
            (try? discovery.resolve("orders.default", on: loop).wait())?.endpoints.first?.endpoint.address.description
                == "10.0.0.2:15008"
        }
        for _ in 0..<4 { release.signal() }  // the refreshes that came after
        await discovery.stop()
        try await group.shutdownGracefully()
        shutdown(agent.listener, Int32(SHUT_RDWR))
        close(agent.listener)
    }
}
