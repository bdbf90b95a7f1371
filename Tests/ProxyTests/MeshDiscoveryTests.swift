import Foundation
import Kademlia
import Logging
import MeshAPI
import MeshIdentity
import NIOCore
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
