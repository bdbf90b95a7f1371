import Benchmark
import BenchmarkSupport
import Foundation
import Kademlia
import MeshConfiguration
import NIOCore
import Proxy

/// The codecs every connection or DHT message goes through: the mesh preface a client
/// sidecar sends at the start of each flow and the server sidecar decodes, the DHT's
/// wire frames (a `nodes` answer of 20 contacts, the largest common message), and a
/// sidecar's configuration, read from YAML and written as the agent writes it.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: MicroThresholds.metrics,
        timeUnits: .nanoseconds,
        warmupIterations: 100,
        maxDuration: .seconds(3),
        maxIterations: 100_000,
        thresholds: MicroThresholds.thresholds
    )

    let request = try! PrefaceRequest(service: "orders.shop", port: 8080)
    var frame = ByteBuffer()
    request.encode(into: &frame)
    let encodedFrame = frame

    Benchmark("preface_encode") { benchmark in
        for _ in benchmark.scaledIterations {
            var buffer = ByteBuffer()
            request.encode(into: &buffer)
            blackHole(buffer)
        }
    }

    Benchmark("preface_decode") { benchmark in
        for _ in benchmark.scaledIterations {
            var buffer = encodedFrame
            blackHole(try! PrefaceRequest(body: MeshPreface.decodeFrame(&buffer)!))
        }
    }

    var generator = SplitMix(seed: 7)
    let contacts = (0..<20).map { number in
        Contact(id: .random(using: &generator), address: "10.88.\(number).\(number + 10):7946")
    }
    let envelope = Envelope(
        from: Contact(id: .random(using: &generator), address: "10.88.0.1:7946"),
        requestID: 42,
        message: .nodes(contacts)
    )
    let wire = WireCodec.encode(envelope)

    Benchmark("kademlia_encode_nodes") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(WireCodec.encode(envelope))
        }
    }

    Benchmark("kademlia_decode_nodes") { benchmark in
        for _ in benchmark.scaledIterations {
            var decoder = WireDecoder()
            blackHole(try! decoder.feed(wire))
        }
    }

    let sidecarYAML = """
        identity: {certificate: /etc/beemesh/identity/cert.pem, privateKey: /etc/beemesh/identity/key.pem, trustBundle: /etc/beemesh/identity/bundle.pem}
        inbound: {listen: 0.0.0.0:15008, services: [orders.shop], ports: [8080, 9090]}
        capture: {outbound: [127.0.0.1:15001], inbound: [0.0.0.0:15006]}
        policies: {directory: /etc/beemesh/policies, httpPorts: [8080]}
        workload: {namespace: shop, labels: {app: orders, tier: backend}}
        routes:
          - listen: 127.0.0.1:7000
            service: payments.shop
            port: 8080
            endpoints: [{address: "10.88.0.7:15008", identity: spiffe://mesh.local/ns/shop/sa/payments}]
        discovery: {agent: /run/beemesh/agent.sock}
        workers: 1
        logLevel: info
        """
    let configuration = try! ProxyConfiguration.parse(yaml: sidecarYAML, file: "sidecar.yaml")

    Benchmark("sidecar_configuration_parse") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! ProxyConfiguration.parse(yaml: sidecarYAML, file: "sidecar.yaml"))
        }
    }

    Benchmark("sidecar_configuration_encode") { benchmark in
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        for _ in benchmark.scaledIterations {
            blackHole(try! encoder.encode(configuration))
        }
    }
}
