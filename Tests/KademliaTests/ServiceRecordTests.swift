import Foundation
import Kademlia
import MeshIdentity
import Testing

/// Signed service records with real OpenSSL keys and chains: each way a record can be
/// wrong is refused with its own code.
@Suite struct ServiceRecordTests {
    static let root = try! CertificateAuthority.createRoot(trustDomain: try! TrustDomain("example.org"))
    static let orders = try! root.issueWorkload(try! SpiffeID("spiffe://example.org/ns/shop/sa/orders"))
    static let now = UInt64(Date().timeIntervalSince1970 * 1e9)
    static let validator = ServiceRecordValidator(bundle: root.bundle) { now }

    static func record(
        service: String = "orders",
        namespace: String = "shop",
        spiffeID: String = "spiffe://example.org/ns/shop/sa/orders",
        sequence: UInt64 = 3,
        expires: UInt64 = now + 600_000_000_000
    ) -> ServiceRecord {
        ServiceRecord(
            service: service,
            namespace: namespace,
            endpoint: "10.0.0.12:15008",
            ports: [8080, 8443],
            spiffeID: spiffeID,
            sequence: sequence,
            expires: expires
        )
    }

    static func refusal(_ record: Record) -> ServiceRecordError.Code? {
        do {
            _ = try validator.check(record)
            return nil
        } catch {
            return error.code
        }
    }

    @Test func aRecordSignedByTheServiceItNamesIsBelieved() throws {
        let signed = try SignedServiceRecord.sign(Self.record(), with: Self.orders)
        let dht = signed.dhtRecord
        #expect(dht.key == ServiceRecord.key(service: "orders", namespace: "shop"))
        #expect(try Self.validator.check(dht) == Self.record())
        #expect(try SignedServiceRecord(decoding: dht.value) == signed)
    }

    @Test func aChangedFieldBreaksTheSignature() throws {
        let signed = try SignedServiceRecord.sign(Self.record(), with: Self.orders)
        var forged = signed
        forged.record.endpoint = "203.0.113.66:15008"
        #expect(Self.refusal(forged.dhtRecord) == .badSignature)
    }

    @Test func anotherTrustDomainsChainIsUntrusted() throws {
        let other = try CertificateAuthority.createRoot(trustDomain: try TrustDomain("example.org"))
        let impostor = try other.issueWorkload(try SpiffeID("spiffe://example.org/ns/shop/sa/orders"))
        #expect(Self.refusal(try SignedServiceRecord.sign(Self.record(), with: impostor).dhtRecord) == .untrustedChain)
    }

    @Test func anotherWorkloadMayNotPublishTheService() throws {
        let frontend = try Self.root.issueWorkload(try SpiffeID("spiffe://example.org/ns/shop/sa/frontend"))
        // Naming itself honestly, it still does not serve orders.
        let honest = Self.record(spiffeID: "spiffe://example.org/ns/shop/sa/frontend")
        #expect(Self.refusal(try SignedServiceRecord.sign(honest, with: frontend).dhtRecord) == .notAuthorized)
        // Claiming to be orders: the chain says otherwise.
        #expect(Self.refusal(try SignedServiceRecord.sign(Self.record(), with: frontend).dhtRecord) == .notAuthorized)
        // orders of another namespace.
        let elsewhere = try Self.root.issueWorkload(try SpiffeID("spiffe://example.org/ns/lab/sa/orders"))
        let lab = Self.record(spiffeID: "spiffe://example.org/ns/lab/sa/orders")
        #expect(Self.refusal(try SignedServiceRecord.sign(lab, with: elsewhere).dhtRecord) == .notAuthorized)
    }

    /// `leader.<name>` is published by a pod of `<name>` (its identity's account), and
    /// by nobody else.
    @Test func aLeaderRecordIsTheServicesOwn() throws {
        let leader = Self.record(service: "leader.orders")
        #expect(try Self.validator.check(try SignedServiceRecord.sign(leader, with: Self.orders).dhtRecord) == leader)
        let frontend = try Self.root.issueWorkload(try SpiffeID("spiffe://example.org/ns/shop/sa/frontend"))
        let forged = Self.record(service: "leader.orders", spiffeID: "spiffe://example.org/ns/shop/sa/frontend")
        #expect(Self.refusal(try SignedServiceRecord.sign(forged, with: frontend).dhtRecord) == .notAuthorized)
    }

    /// Mesh names: `NAME.NAMESPACE`, or `leader.NAME.NAMESPACE`, whose records are
    /// `leader.NAME`'s and whose connections name `NAME.NAMESPACE`; nothing else.
    @Test func meshNamesAndTheLeadersName() {
        #expect(ServiceRecord.parse(meshName: "orders.shop")! == ("orders", "shop"))
        #expect(ServiceRecord.parse(meshName: "leader.counter.default")! == ("leader.counter", "default"))
        for name in ["orders", "a.b.c", "leader..default", ".shop", "orders.", "x.leader.counter.default"] {
            #expect(ServiceRecord.parse(meshName: name) == nil, "\(name)")
        }
        #expect(ServiceRecord.served(byMeshName: "leader.counter.default") == "counter.default")
        #expect(ServiceRecord.served(byMeshName: "leader.default") == "leader.default", "a Service named leader")
        #expect(ServiceRecord.served(byMeshName: "orders.shop") == "orders.shop")
    }

    /// `<statefulset>.raft` records say which nodes host a Raft group: a node may
    /// publish one in any namespace; a workload may not, even one whose service
    /// account is named so; and a node may not publish a workload's service.
    @Test func onlyANodePublishesARaftMemberRecord() throws {
        let node = try Self.root.issueWorkload(try SpiffeID("spiffe://example.org/node/node-2"))
        let member = Self.record(service: "counter.raft", spiffeID: "spiffe://example.org/node/node-2")
        #expect(try Self.validator.check(try SignedServiceRecord.sign(member, with: node).dhtRecord) == member)

        let sneaky = try Self.root.issueWorkload(try SpiffeID("spiffe://example.org/ns/shop/sa/counter.raft"))
        let forged = Self.record(service: "counter.raft", spiffeID: "spiffe://example.org/ns/shop/sa/counter.raft")
        #expect(Self.refusal(try SignedServiceRecord.sign(forged, with: sneaky).dhtRecord) == .notAuthorized)

        let plain = Self.record(spiffeID: "spiffe://example.org/node/node-2")
        #expect(Self.refusal(try SignedServiceRecord.sign(plain, with: node).dhtRecord) == .notAuthorized)
    }

    @Test func expiredAndMismatchedRecordsAreRefused() throws {
        let expired = try SignedServiceRecord.sign(Self.record(expires: Self.now - 1), with: Self.orders)
        #expect(Self.refusal(expired.dhtRecord) == .expired)
        var rolled = try SignedServiceRecord.sign(Self.record(sequence: 3), with: Self.orders).dhtRecord
        rolled.sequence = 9  // claims to be newer than what was signed
        #expect(Self.refusal(rolled) == .mismatch)
        var moved = try SignedServiceRecord.sign(Self.record(), with: Self.orders).dhtRecord
        moved.key = ServiceRecord.key(service: "payments", namespace: "shop")
        #expect(Self.refusal(moved) == .mismatch)
    }

    @Test func everyTruncationIsMalformedAndNothingCrashes() throws {
        let value = try SignedServiceRecord.sign(Self.record(), with: Self.orders).dhtRecord.value
        for length in 0..<value.count {
            #expect(throws: ServiceRecordError.self) { try SignedServiceRecord(decoding: Array(value.prefix(length))) }
        }
        #expect(throws: ServiceRecordError.self) { try SignedServiceRecord(decoding: value + [0]) }
    }

    @Test func aNodeStoresOnlyRecordsTheValidatorBelieves() throws {
        var node = KademliaNode(
            contact: Contact(id: NodeID(7, 7, 7, 7), address: "node"),
            seed: 1,
            validator: Self.validator
        )
        let peer = Contact(id: NodeID(8, 8, 8, 8), address: "peer")
        let good = try SignedServiceRecord.sign(Self.record(), with: Self.orders)
        var forged = good
        forged.record.ports = [22]
        for (record, accepted) in [(forged.dhtRecord, false), (good.dhtRecord, true)] {
            let out = node.receive(Envelope(from: peer, requestID: 1, message: .store(record)), now: Self.now)
            #expect(
                out.contains(.send(Envelope(from: node.contact, requestID: 1, message: .stored(accepted)), to: peer))
            )
        }
        #expect(node.records(under: good.record.key) == [good.dhtRecord])
        #expect(node.rejected["invalid_record"] == 1)
    }
}
