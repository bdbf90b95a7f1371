import Metrics
import Policy

/// The sidecar's connection metrics, built once when the proxy starts (one per
/// `ProxyEnvironment`) from this one table; the handlers count through it instead of
/// building a metric at each call site.
///
/// | metric                               | dimension | values                     |
/// |--------------------------------------|-----------|----------------------------|
/// | `beemesh_outbound_connections_total` | `result`  | ok, passthrough, no_endpoint, error, loop, egress_denied, no_original_destination, unreachable, and the denial reasons of the server sidecar (`PrefaceResponse.Reason`) |
/// | `beemesh_inbound_connections_total`  | `result`  | ok, plaintext, plaintext_refused, upstream_unavailable, the denial reasons, unauthenticated_cap, unauthenticated_source_cap (and, counted by `HandshakeAdmission` itself, first_byte_timeout and unauthenticated_evicted) |
/// | `beemesh_relays_total`               | `engine`  | channel, direct            |
/// | `beemesh_egress_decisions_total`     | `verdict`, `policy` | built per decision: policies come and go |
final class ProxyMetrics: Sendable {
    static let outboundResults =
        [
            "ok", "passthrough", "no_endpoint", "error", "loop", "egress_denied", "no_original_destination",
            "unreachable",
        ] + denialReasons
    static let inboundResults =
        ["ok", "plaintext", "plaintext_refused", "upstream_unavailable"] + denialReasons
        + [HandshakeAdmission.Refusal.total.rawValue, HandshakeAdmission.Refusal.perSource.rawValue]
    private static var denialReasons: [String] {
        (1...UInt16.max).lazy.prefix { PrefaceResponse.Reason(rawValue: $0) != nil }
            .compactMap { PrefaceResponse.Reason(rawValue: $0)?.label }
    }

    private let outbound: [String: Counter]
    private let inbound: [String: Counter]
    private let channelRelays = Counter(label: "beemesh_relays_total", dimensions: [("engine", "channel")])
    private let directRelays = Counter(label: "beemesh_relays_total", dimensions: [("engine", "direct")])

    init() {
        func counters(_ label: String, _ results: [String]) -> [String: Counter] {
            Dictionary(Set(results).map { ($0, Counter(label: label, dimensions: [("result", $0)])) }) { first, _ in
                first
            }
        }
        outbound = counters("beemesh_outbound_connections_total", Self.outboundResults)
        inbound = counters("beemesh_inbound_connections_total", Self.inboundResults)
    }

    /// An outbound connection ended up as `result` (one of `outboundResults`).
    func outbound(_ result: String) {
        (outbound[result] ?? Counter(label: "beemesh_outbound_connections_total", dimensions: [("result", result)]))
            .increment()
    }

    /// An inbound connection ended up as `result` (one of `inboundResults`).
    func inbound(_ result: String) {
        (inbound[result] ?? Counter(label: "beemesh_inbound_connections_total", dimensions: [("result", result)]))
            .increment()
    }

    func relay(direct: Bool) {
        (direct ? directRelays : channelRelays).increment()
    }

    func egressDecision(_ decision: PolicyDecision) {
        Counter(
            label: "beemesh_egress_decisions_total",
            dimensions: [("verdict", decision.verdict.rawValue), ("policy", decision.policyLabel)]
        ).increment()
    }
}
