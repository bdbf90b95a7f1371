#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// One connection a sidecar handled, as `GET /flows` and `beectl flows` show it: who
/// talked to whom, under which identities, what policy decided it, how many bytes went
/// each way, how it ended and, on HTTP ports, every request.
///
/// Byte counts are from the source's point of view of the hop: `bytesIn` went from the
/// source towards the destination (requests), `bytesOut` came back (responses).
public struct FlowRecord: Codable, Sendable, Equatable {
    public enum Direction: String, Codable, Sendable, CaseIterable {
        /// Accepted from another sidecar (mTLS) or, where a policy allows, a plaintext peer.
        case inbound
        /// Started by the local app, carried to another sidecar or passed through.
        case outbound
    }

    /// What happened to the flow as a whole.
    public enum Verdict: String, Codable, Sendable, CaseIterable {
        /// Admitted by a policy.
        case allowed
        /// Refused: by a policy, or because nothing may serve it (see `reason`).
        case denied
        /// Admitted, and an AUDIT rule recorded it (a dry run of a policy).
        case audit
        /// Admitted, then closed because a policy change denied it.
        case revoked
        /// Never relayed: a handshake, preface or upstream failure (see `reason`).
        case error
    }

    /// How a flow ended.
    public enum CloseReason: String, Codable, Sendable, CaseIterable {
        /// Both sides finished (or the flow was refused and closed cleanly).
        case done
        /// A peer reset the connection.
        case reset
        /// The idle timeout or the drain deadline.
        case timeout
        /// A policy change revoked it.
        case revoked
        /// Any other failure.
        case error
    }

    /// Where a flow came from.
    public struct Source: Codable, Sendable, Equatable {
        /// `host:port` of the connecting socket.
        public var address: String?
        /// The verified SPIFFE ID, or `unauthenticated` (a plaintext peer, or the local
        /// app on an outbound flow, which proves nothing by itself).
        public var identity: String

        public init(address: String?, identity: String) {
            self.address = address
            self.identity = identity
        }
    }

    /// Where a flow went.
    public struct Destination: Codable, Sendable, Equatable {
        /// `name.namespace` of a mesh service; nil for a destination outside the mesh.
        public var service: String?
        /// The address dialled or connected to (`host:port`).
        public var address: String?
        public var port: UInt16
        /// The SPIFFE ID the destination proved (outbound) or this sidecar's own
        /// identity (inbound).
        public var identity: String?

        public init(service: String?, address: String?, port: UInt16, identity: String?) {
            self.service = service
            self.address = address
            self.port = port
            self.identity = identity
        }
    }

    /// The negotiated TLS parameters of the mesh hop.
    public struct TLS: Codable, Sendable, Equatable {
        public var version: String
        public var cipher: String

        public init(version: String, cipher: String) {
            self.version = version
            self.cipher = cipher
        }
    }

    /// Assigned by the sidecar, increasing; unique within one sidecar's run.
    public var id: UInt64
    public var start: Date
    /// Nil while the flow is open.
    public var end: Date?
    public var direction: Direction
    public var source: Source
    public var destination: Destination
    /// `tcp` (opaque) or `http` (requests decided one by one).
    public var `protocol`: String
    public var tls: TLS?
    public var verdict: Verdict
    /// `namespace/name` of the deciding policy, or `default-deny`.
    public var policy: String?
    /// Index of the deciding rule within the policy.
    public var rule: Int?
    /// AUDIT rules that matched (`namespace/name#rule`).
    public var audits: [String]
    /// Why a flow was denied or failed: a preface reason code (`policy_denied`,
    /// `port_not_allowed`, …), `egress_denied`, `no_endpoint`, a handshake failure.
    public var reason: String?
    public var bytesIn: UInt64
    public var bytesOut: UInt64
    /// Nil while the flow is open.
    public var closeReason: CloseReason?
    /// HTTP requests seen on the flow (HTTP ports only).
    public var requests: UInt64
    /// The newest HTTP requests, in order: at most the last 32 of `requests`, so that a
    /// long keep-alive connection keeps a bounded record.
    public var http: [HTTPExchange]
    /// `namespace/name` of the pod whose sidecar recorded the flow: set by the node
    /// agent when it merges its sidecars' flows (nil from a sidecar itself).
    public var pod: String?

    public init(
        id: UInt64,
        start: Date,
        direction: Direction,
        source: Source,
        destination: Destination,
        protocol: String = "tcp",
        verdict: Verdict = .error
    ) {
        self.id = id
        self.start = start
        self.direction = direction
        self.source = source
        self.destination = destination
        self.protocol = `protocol`
        self.verdict = verdict
        self.audits = []
        self.bytesIn = 0
        self.bytesOut = 0
        self.requests = 0
        self.http = []
    }

    /// Seconds from start to end (to `now` while open).
    public func duration(now: Date) -> Double {
        (end ?? now).timeIntervalSince(start)
    }

    /// Open flows have no end yet.
    public var isOpen: Bool { end == nil }

    private enum CodingKeys: String, CodingKey {
        case id, start, end, duration, direction, source, destination, `protocol`, tls, verdict, policy, rule
        case audits, reason, bytesIn, bytesOut, closeReason, requests, http, pod
    }

    public init(from decoder: any Decoder) throws {
        let values = try decoder.container(keyedBy: CodingKeys.self)
        id = try values.decode(UInt64.self, forKey: .id)
        start = try values.decode(Date.self, forKey: .start)
        end = try values.decodeIfPresent(Date.self, forKey: .end)
        direction = try values.decode(Direction.self, forKey: .direction)
        source = try values.decode(Source.self, forKey: .source)
        destination = try values.decode(Destination.self, forKey: .destination)
        self.protocol = try values.decode(String.self, forKey: .protocol)
        tls = try values.decodeIfPresent(TLS.self, forKey: .tls)
        verdict = try values.decode(Verdict.self, forKey: .verdict)
        policy = try values.decodeIfPresent(String.self, forKey: .policy)
        rule = try values.decodeIfPresent(Int.self, forKey: .rule)
        audits = try values.decodeIfPresent([String].self, forKey: .audits) ?? []
        reason = try values.decodeIfPresent(String.self, forKey: .reason)
        bytesIn = try values.decode(UInt64.self, forKey: .bytesIn)
        bytesOut = try values.decode(UInt64.self, forKey: .bytesOut)
        closeReason = try values.decodeIfPresent(CloseReason.self, forKey: .closeReason)
        http = try values.decodeIfPresent([HTTPExchange].self, forKey: .http) ?? []
        requests = try values.decodeIfPresent(UInt64.self, forKey: .requests) ?? UInt64(http.count)
        pod = try values.decodeIfPresent(String.self, forKey: .pod)
    }

    /// Encodes every field, plus `duration` (seconds) for finished flows, so that a
    /// reader of the JSON need not subtract timestamps.
    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(id, forKey: .id)
        try values.encode(start, forKey: .start)
        try values.encodeIfPresent(end, forKey: .end)
        if let end { try values.encode(end.timeIntervalSince(start), forKey: .duration) }
        try values.encode(direction, forKey: .direction)
        try values.encode(source, forKey: .source)
        try values.encode(destination, forKey: .destination)
        try values.encode(self.protocol, forKey: .protocol)
        try values.encodeIfPresent(tls, forKey: .tls)
        try values.encode(verdict, forKey: .verdict)
        try values.encodeIfPresent(policy, forKey: .policy)
        try values.encodeIfPresent(rule, forKey: .rule)
        if !audits.isEmpty { try values.encode(audits, forKey: .audits) }
        try values.encodeIfPresent(reason, forKey: .reason)
        try values.encode(bytesIn, forKey: .bytesIn)
        try values.encode(bytesOut, forKey: .bytesOut)
        try values.encodeIfPresent(closeReason, forKey: .closeReason)
        if requests > 0 { try values.encode(requests, forKey: .requests) }
        if !http.isEmpty { try values.encode(http, forKey: .http) }
        try values.encodeIfPresent(pod, forKey: .pod)
    }
}

/// One HTTP/1.1 request of a flow on an HTTP port, and its answer.
public struct HTTPExchange: Codable, Sendable, Equatable {
    public var method: String
    /// The `Host` header.
    public var authority: String?
    /// The request target as sent (query included).
    public var path: String
    /// Nil until the response head is seen (or when the connection ended first).
    public var status: Int?
    /// Seconds from the request head to the response head.
    public var latency: Double?
    /// `allowed`, `denied` (answered 403 by the sidecar) or `audit`.
    public var verdict: FlowRecord.Verdict
    /// `namespace/name` of the deciding policy, or `default-deny`.
    public var policy: String?
    public var rule: Int?

    public init(
        method: String,
        authority: String?,
        path: String,
        status: Int? = nil,
        latency: Double? = nil,
        verdict: FlowRecord.Verdict,
        policy: String?,
        rule: Int? = nil
    ) {
        self.method = method
        self.authority = authority
        self.path = path
        self.status = status
        self.latency = latency
        self.verdict = verdict
        self.policy = policy
        self.rule = rule
    }
}
