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
