import CoreMetrics
import Prometheus

/// The process's swift-metrics backend: a Prometheus registry that `GET /metrics`
/// renders. Every metric the proxy and the agent report is named `beemesh_…`.
public enum MeshMetrics {
    /// Bootstraps swift-metrics with Prometheus once per process and returns the
    /// registry; later calls return the same one (swift-metrics allows one backend).
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // HTTP latencies through a sidecar: from 100 µs to 10 s.
        factory.durationHistogramBuckets["beemesh_http_request_duration_seconds"] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }()
}

/// One counter per value of one dimension (a result, a reason), built once when the
/// component that counts starts, so that counting is a dictionary lookup and never a
/// registry lookup. A value outside `values` still counts: its counter is built then.
public struct CounterFamily: Sendable {
    public let label: String
    public let dimension: String
    private let counters: [String: CoreMetrics.Counter]

    public init(_ label: String, by dimension: String, values: some Sequence<String>) {
        self.label = label
        self.dimension = dimension
        counters = Dictionary(values.map { ($0, CoreMetrics.Counter(label: label, dimensions: [(dimension, $0)])) }) {
            first,
            _ in
            first
        }
    }

    /// The family of a code enum's cases (a parser's error codes).
    public init<Code: CaseIterable & RawRepresentable>(_ label: String, by dimension: String, codes: Code.Type)
    where Code.RawValue == String {
        self.init(label, by: dimension, values: Code.allCases.map(\.rawValue))
    }

    public func increment(_ value: String, by amount: Int = 1) {
        (counters[value] ?? CoreMetrics.Counter(label: label, dimensions: [(dimension, value)])).increment(
            by: Int64(amount)
        )
    }
}
