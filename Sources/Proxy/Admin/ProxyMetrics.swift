import MeshProcess
import Metrics
import Policy

/// The sidecar's metrics, built once when the proxy starts (`ProxyServer` makes one
/// and hands it to every component) from this one table; the components count
/// through it instead of building a metric at each call site.
///
/// | metric                                 | dimensions | values                  |
/// |----------------------------------------|-----------|--------------------------|
/// | `beemesh_outbound_connections_total`   | `result`  | ok, passthrough, no_endpoint, error, loop, egress_denied, no_original_destination, unreachable, and the denial reasons of the server sidecar (`PrefaceResponse.Reason`) |
/// | `beemesh_inbound_connections_total`    | `result`  | ok, plaintext, plaintext_refused, upstream_unavailable, the denial reasons, unauthenticated_cap, unauthenticated_source_cap, unauthenticated_evicted, first_byte_timeout |
/// | `beemesh_relays_total`                 | `engine`  | channel, direct           |
/// | `beemesh_endpoint_ejections_total`     |           | an endpoint attempt failed: tried last for a while |
/// | `beemesh_preface_errors_total`         | `reason`  | `PrefaceError.Code`       |
/// | `beemesh_http_parse_errors_total`      | `reason`  | `HTTPFramingError.Code`, `RequestTarget.Refusal.Code` |
/// | `beemesh_dns_queries_total`            | `result`  | `MeshDNSServer.results`   |
/// | `beemesh_dns_rejected_total`           | `reason`  | `DNSError.Code`           |
/// | `beemesh_policy_reloads_total`         | `result`  | ok, error                 |
/// | `beemesh_policy_file_errors` (gauge)   |           | files whose current version is refused |
/// | `beemesh_admin_connections_closed_total` | `reason` | idle, cap                |
/// | `beemesh_policy_decisions_total`       | `verdict`, `policy` | per decision: policies come and go |
/// | `beemesh_egress_decisions_total`       | `verdict`, `policy` | per decision       |
/// | `beemesh_flows_revoked_total`          | `policy`  | per revocation            |
final class ProxyMetrics: Sendable {
    static let outboundResults =
        [
            "ok", "passthrough", "no_endpoint", "error", "loop", "egress_denied", "no_original_destination",
            "unreachable",
        ] + denialReasons
    static let inboundResults =
        ["ok", "plaintext", "plaintext_refused", "upstream_unavailable"] + denialReasons
        + HandshakeAdmission.Refusal.allCases.map(\.rawValue) + ["unauthenticated_evicted", "first_byte_timeout"]
    private static var denialReasons: [String] {
        (1...UInt16.max).lazy.prefix { PrefaceResponse.Reason(rawValue: $0) != nil }
            .compactMap { PrefaceResponse.Reason(rawValue: $0)?.label }
    }

    private let outbound = CounterFamily("beemesh_outbound_connections_total", by: "result", values: outboundResults)
    private let inbound = CounterFamily("beemesh_inbound_connections_total", by: "result", values: inboundResults)
    private let relays = CounterFamily("beemesh_relays_total", by: "engine", values: ["channel", "direct"])
    private let ejections = Counter(label: "beemesh_endpoint_ejections_total")
    private let prefaceErrors = CounterFamily(
        "beemesh_preface_errors_total",
        by: "reason",
        codes: PrefaceError.Code.self
    )
    private let httpParseErrors = CounterFamily(
        "beemesh_http_parse_errors_total",
        by: "reason",
        values: HTTPFramingError.Code.allCases.map(\.rawValue) + RequestTarget.Refusal.Code.allCases.map(\.rawValue)
    )
    private let dnsQueries = CounterFamily("beemesh_dns_queries_total", by: "result", values: MeshDNSServer.results)
    private let dnsRejected = CounterFamily("beemesh_dns_rejected_total", by: "reason", codes: DNSError.Code.self)
    private let policyReloads = CounterFamily("beemesh_policy_reloads_total", by: "result", values: ["ok", "error"])
    private let policyFileErrors = Gauge(label: "beemesh_policy_file_errors")
    private let adminClosed = CounterFamily(
        "beemesh_admin_connections_closed_total",
        by: "reason",
        values: ["idle", "cap"]
    )

    init() {}

    /// An outbound connection ended up as `result` (one of `outboundResults`).
    func outbound(_ result: String) { outbound.increment(result) }

    /// An inbound connection ended up as `result` (one of `inboundResults`).
    func inbound(_ result: String) { inbound.increment(result) }

    func relay(direct: Bool) { relays.increment(direct ? "direct" : "channel") }

    func endpointEjected() { ejections.increment() }

    func prefaceError(_ code: PrefaceError.Code) { prefaceErrors.increment(code.rawValue) }

    /// An HTTP message refused: `reason` is a `HTTPFramingError.Code` or a
    /// `RequestTarget.Refusal.Code`.
    func httpParseError(_ reason: String) { httpParseErrors.increment(reason) }

    func dnsQuery(_ result: String) { dnsQueries.increment(result) }

    func dnsRejected(_ code: DNSError.Code) { dnsRejected.increment(code.rawValue) }

    /// A policy reload (`ok`: no file of it refused); `fileErrors` files keep their
    /// last good version.
    func policyReload(ok: Bool, fileErrors: Int) {
        policyReloads.increment(ok ? "ok" : "error")
        policyFileErrors.record(fileErrors)
    }

    /// An admin or metrics connection closed by the proxy: idle, or over the cap.
    func adminClosed(_ reason: String) { adminClosed.increment(reason) }

    func policyDecision(_ decision: PolicyDecision) { count("beemesh_policy_decisions_total", decision) }

    func egressDecision(_ decision: PolicyDecision) { count("beemesh_egress_decisions_total", decision) }

    /// A decision by verdict and by the policy that made it (policies come and go, so
    /// these counters are built per decision).
    private func count(_ label: String, _ decision: PolicyDecision) {
        Counter(label: label, dimensions: [("verdict", decision.verdict.rawValue), ("policy", decision.policyLabel)])
            .increment()
    }

    func flowRevoked(by decision: PolicyDecision) {
        Counter(label: "beemesh_flows_revoked_total", dimensions: [("policy", decision.policyLabel)]).increment()
    }
}
