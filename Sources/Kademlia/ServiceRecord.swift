import MeshIdentity

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

#if canImport(Glibc)
    import Glibc
#endif

/// One endpoint of a mesh service as the DHT carries it: where its sidecar's mTLS
/// listener is, which app ports it serves and under which identity, signed by that
/// workload's key with its certificate chain attached, so that no node on the way can
/// change or invent it.
///
/// The DHT key of a service is the SHA-256 of `beemesh/service/<name>.<namespace>`.
public struct ServiceRecord: Equatable, Sendable {
    public var service: String
    public var namespace: String
    /// `host:port` of the endpoint sidecar's mTLS listener.
    public var endpoint: String
    public var ports: [UInt16]
    public var spiffeID: String
    public var weight: UInt16
    /// A higher one replaces a lower one from the same endpoint.
    public var sequence: UInt64
    /// Nanoseconds since 1970 (the same clock as `Record.expires`).
    public var expires: UInt64

    public init(
        service: String,
        namespace: String,
        endpoint: String,
        ports: [UInt16],
        spiffeID: String,
        weight: UInt16 = 100,
        sequence: UInt64,
        expires: UInt64
    ) {
        self.service = service
        self.namespace = namespace
        self.endpoint = endpoint
        self.ports = ports
        self.spiffeID = spiffeID
        self.weight = weight
        self.sequence = sequence
        self.expires = expires
    }

    public static func key(service: String, namespace: String) -> NodeID {
        NodeID(bytes: Digest.sha256(Array("beemesh/service/\(service).\(namespace)".utf8)))!
    }

    public var key: NodeID { Self.key(service: service, namespace: namespace) }

    /// A record under `<statefulset>.raft` in a namespace says that a node hosts that
    /// StatefulSet's Raft group and where its agent listens for Raft (`endpoint`); only a
    /// node identity may publish one. No workload can serve such a name: a mesh name's
    /// labels hold no dot.
    public static let raftMemberSuffix = ".raft"

    /// A record under `leader.<name>` is the one a StatefulSet's leading pod publishes
    /// besides its own (mesh DNS: `leader.<name>.<namespace>.mesh`); the identity that
    /// may serve `<name>` may serve it.
    public static let leaderPrefix = "leader."

    /// A mesh name without its suffix, `NAME.NAMESPACE` or `leader.NAME.NAMESPACE` (a
    /// StatefulSet's leading pod), as the service and namespace of the records it is
    /// looked up by; nil: neither. (Mesh DNS, the agent's lookup.)
    public static func parse(meshName name: String) -> (service: String, namespace: String)? {
        let labels = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard labels.allSatisfy({ !$0.isEmpty }) else { return nil }
        switch labels.count {
        case 2: return (labels[0], labels[1])
        case 3 where labels[0] + "." == leaderPrefix: return (leaderPrefix + labels[1], labels[2])
        default: return nil
        }
    }

    /// The service a connection to mesh name `name` reaches, as its preface names it:
    /// `leader.NAME.NAMESPACE` reaches `NAME.NAMESPACE` (its leading pod serves it).
    public static func served(byMeshName name: String) -> String {
        guard let (service, namespace) = parse(meshName: name), service.hasPrefix(leaderPrefix) else { return name }
        return "\(service.dropFirst(leaderPrefix.count)).\(namespace)"
    }

    /// Whether this is a `leader.<name>` record (a name with no dot of its own after it).
    public var isLeaderRecord: Bool {
        service.hasPrefix(Self.leaderPrefix) && service.count > Self.leaderPrefix.count
            && !service.dropFirst(Self.leaderPrefix.count).contains(".")
    }

    /// The publisher under the service key: its endpoint (a pod), so that the endpoints
    /// of one service, which share an identity, are kept side by side; for a Raft
    /// member record, its node's identity, so that a node replaces only its own.
    public var publisher: NodeID {
        let name =
            service.hasSuffix(Self.raftMemberSuffix) ? "beemesh/node/\(spiffeID)" : "beemesh/endpoint/\(endpoint)"
        return NodeID(bytes: Digest.sha256(Array(name.utf8)))!
    }

    /// The bytes that are signed: every field, length-prefixed, in a fixed order.
    var canonicalBytes: [UInt8] {
        var writer = BinaryWriter()
        writer.string("beemesh.service-record.v1")
        writer.string(service)
        writer.string(namespace)
        writer.string(endpoint)
        writer.integer(UInt16(ports.count))
        for port in ports { writer.integer(port) }
        writer.string(spiffeID)
        writer.integer(weight)
        writer.integer(sequence)
        writer.integer(expires)
        return writer.bytes
    }
}

/// A `ServiceRecord` with the publisher's signature and certificate chain (DER, leaf
/// first), as stored in the value of a DHT `Record`.
public struct SignedServiceRecord: Equatable, Sendable {
    public var record: ServiceRecord
    public var signature: [UInt8]
    public var chain: [[UInt8]]

    /// Signs `record` with the workload's key; `chain` is its certificate chain.
    public static func sign(
        _ record: ServiceRecord,
        with credentials: WorkloadCredentials
    ) throws(IdentityError) -> SignedServiceRecord {
        SignedServiceRecord(
            record: record,
            signature: try credentials.key.sign(record.canonicalBytes),
            chain: credentials.chain.map(\.derEncoded)
        )
    }

    /// The DHT record carrying it.
    public var dhtRecord: Record {
        var writer = BinaryWriter()
        writer.lengthPrefixed(record.canonicalBytes)
        writer.lengthPrefixed(signature)
        writer.integer(UInt8(chain.count))
        for certificate in chain { writer.lengthPrefixed(certificate) }
        return Record(
            key: record.key,
            publisher: record.publisher,
            value: writer.bytes,
            sequence: record.sequence,
            expires: record.expires
        )
    }

    /// Reads the value of a DHT record; throws what is malformed.
    public init(decoding value: [UInt8]) throws(ServiceRecordError) {
        var outer = BinaryReader(record: value[...])
        var inner = BinaryReader(record: try outer.lengthPrefixed("record")[...])
        guard try inner.string("format") == "beemesh.service-record.v1" else {
            throw ServiceRecordError(.malformed, "unknown record format")
        }
        let service = try inner.string("service")
        let namespace = try inner.string("namespace")
        let endpoint = try inner.string("endpoint")
        let portCount = Int(try inner.integer(UInt16.self, "ports"))
        var ports: [UInt16] = []
        for _ in 0..<portCount { ports.append(try inner.integer(UInt16.self, "port")) }
        record = ServiceRecord(
            service: service,
            namespace: namespace,
            endpoint: endpoint,
            ports: ports,
            spiffeID: try inner.string("spiffeID"),
            weight: try inner.integer(UInt16.self, "weight"),
            sequence: try inner.integer(UInt64.self, "sequence"),
            expires: try inner.integer(UInt64.self, "expires")
        )
        guard inner.isEmpty else { throw ServiceRecordError(.malformed, "bytes after the record") }
        signature = try outer.lengthPrefixed("signature")
        let count = Int(try outer.integer(UInt8.self, "chain"))
        guard (1...8).contains(count) else { throw ServiceRecordError(.malformed, "a chain of \(count) certificates") }
        chain = []
        for _ in 0..<count { chain.append(try outer.lengthPrefixed("certificate")) }
        guard outer.isEmpty else { throw ServiceRecordError(.malformed, "bytes after the chain") }
    }

    private init(record: ServiceRecord, signature: [UInt8], chain: [[UInt8]]) {
        self.record = record
        self.signature = signature
        self.chain = chain
    }
}

/// Why a service record is not believed.
public struct ServiceRecordError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable, CaseIterable {
        case malformed
        /// The DHT record's key, publisher, sequence or expiry is not the signed one's.
        case mismatch
        case untrustedChain = "untrusted_chain"
        case badSignature = "bad_signature"
        /// The signer's identity may not serve this service.
        case notAuthorized = "not_authorized"
        case expired
    }

    public let code: Code
    public let reason: String

    public init(_ code: Code, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    public var description: String { "\(code.rawValue): \(reason)" }
}

/// Believes a service record only if its chain verifies to the trust bundle, its
/// signature is the leaf's, and the leaf's SPIFFE ID may serve the service: the same
/// namespace, and the service account named like the service, or like the service
/// after `leader.` (for a Raft member record, `<name>.raft`: a node identity).
public struct ServiceRecordValidator: RecordValidator {
    public let bundle: TrustBundle
    /// Wall time in nanoseconds since 1970 (injected: tests use a fixed one).
    public let now: @Sendable () -> UInt64

    /// The wall clock in nanoseconds since 1970: what record expiries count in.
    @Sendable public static func wallClock() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    public init(bundle: TrustBundle, now: @escaping @Sendable () -> UInt64 = ServiceRecordValidator.wallClock) {
        self.bundle = bundle
        self.now = now
    }

    public func validate(_ record: Record) -> Bool {
        (try? check(record)) != nil
    }

    /// The service record inside `record`, or why it is refused.
    public func check(_ record: Record) throws(ServiceRecordError) -> ServiceRecord {
        let signed = try SignedServiceRecord(decoding: record.value)
        let service = signed.record
        guard record.key == service.key, record.publisher == service.publisher, record.sequence == service.sequence,
            record.expires == service.expires
        else {
            throw ServiceRecordError(
                .mismatch,
                "the DHT record's key, publisher, sequence or expiry differs from the signed ones"
            )
        }
        let time = now()
        guard service.expires > time else {
            throw ServiceRecordError(.expired, "expired \((time - service.expires) / 1_000_000_000) s ago")
        }
        var chain: [Certificate] = []
        for der in signed.chain {
            do {
                chain.append(try Certificate(der: der))
            } catch {
                throw ServiceRecordError(.malformed, "certificate: \(error.reason)")
            }
        }
        let identity: SpiffeID
        switch bundle.verify(chain: chain, at: Date(timeIntervalSince1970: Double(time) / 1e9)) {
        case .success(let verified): identity = verified
        case .failure(let failure): throw ServiceRecordError(.untrustedChain, "\(failure)")
        }
        guard chain[0].verify(signature: signed.signature, over: service.canonicalBytes) else {
            throw ServiceRecordError(.badSignature, "the signature is not the leaf key's")
        }
        guard identity.description == service.spiffeID else {
            throw ServiceRecordError(.notAuthorized, "signed by \(identity), names \(service.spiffeID)")
        }
        if service.service.hasSuffix(ServiceRecord.raftMemberSuffix) {
            // A node hosting a StatefulSet's Raft group says where its agent listens.
            guard identity.path.hasPrefix("/node/"), identity.path.count > "/node/".count else {
                throw ServiceRecordError(.notAuthorized, "\(identity) is not a node: it hosts no Raft group")
            }
            return service
        }
        let served =
            service.isLeaderRecord
            ? String(service.service.dropFirst(ServiceRecord.leaderPrefix.count)) : service.service
        guard identity.namespace == service.namespace, identity.serviceAccount == served else {
            throw ServiceRecordError(
                .notAuthorized,
                "\(identity) may not serve \(service.service).\(service.namespace)"
            )
        }
        return service
    }
}

extension BinaryReader where Failure == ServiceRecordError {
    init(record bytes: ArraySlice<UInt8>) {
        self.init(bytes) { ServiceRecordError(.malformed, $0) }
    }

    mutating func string(_ what: String) throws(ServiceRecordError) -> String {
        guard let text = String(validating: try lengthPrefixed(what), as: UTF8.self) else {
            throw ServiceRecordError(.malformed, "\(what): not UTF-8")
        }
        return text
    }
}
