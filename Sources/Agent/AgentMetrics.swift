import Kademlia
import MeshProcess
import Metrics

/// The agent's counters, built once when it starts from this one table: its
/// `DHTService` makes it, and the API counts through the same one.
///
/// | metric                                | dimension | values                     |
/// |---------------------------------------|-----------|----------------------------|
/// | `beemesh_dht_messages_sent_total`     |           |                            |
/// | `beemesh_dht_messages_received_total` |           |                            |
/// | `beemesh_dht_messages_rejected_total` | `reason`  | connections refused by the transport (`transportRejections`, `malformed_` + `WireError.Code`) and messages the state machine refused (`KademliaNode.rejected`) |
/// | `beemesh_api_refused_total`           | `reason`  | no_credentials, unauthenticated, overloaded, forbidden |
/// | `beemesh_manifests_refused_total`     |           |                            |
/// | `beemesh_dht_publish_refused_total`   | `reason`  | not_own_record, `ServiceRecordError.Code` |
public final class AgentMetrics: Sendable {
    static let transportRejections =
        ["connection_limit", "not_a_node", "wrong_node_id", "sender_mismatch"]
        + WireError.Code.allCases.map { "malformed_" + $0.rawValue }
    static let nodeRejections = [
        "expired_record", "invalid_record", "key_full", "own_id", "rolled_back_record", "unexpected_response",
        "unsolicited_response",
    ]

    private let sent = Counter(label: "beemesh_dht_messages_sent_total")
    private let received = Counter(label: "beemesh_dht_messages_received_total")
    private let rejected = CounterFamily(
        "beemesh_dht_messages_rejected_total",
        by: "reason",
        values: transportRejections + nodeRejections
    )
    private let apiRefused = CounterFamily(
        "beemesh_api_refused_total",
        by: "reason",
        values: ["no_credentials", "unauthenticated", "overloaded", "forbidden"]
    )
    private let manifestsRefused = Counter(label: "beemesh_manifests_refused_total")
    private let publishRefused = CounterFamily(
        "beemesh_dht_publish_refused_total",
        by: "reason",
        values: ["not_own_record"] + ServiceRecordError.Code.allCases.map(\.rawValue)
    )

    public init() {}

    func dhtSent() { sent.increment() }
    func dhtReceived() { received.increment() }
    func dhtRejected(_ reason: String, count: Int = 1) { rejected.increment(reason, by: count) }
    func apiRefused(_ reason: String) { apiRefused.increment(reason) }
    func manifestRefused() { manifestsRefused.increment() }
    func publishRefused(_ reason: String) { publishRefused.increment(reason) }
}
