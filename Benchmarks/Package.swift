// swift-tools-version:6.1
import PackageDescription

/// BeeMesh's in-process micro-benchmarks (policy decisions and reloads, the wire
/// codecs), on ordo-one's package-benchmark, with threshold files in `Thresholds/`
/// that `tools/bench micro --check` holds them to. A package of its own, as swift-nio's
/// `Benchmarks/`, so that the product's build never pulls in the benchmark harness.
let package = Package(
    name: "BeeMeshBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "BeeMesh", path: ".."),
        .package(
            url: "https://github.com/ordo-one/benchmark",
            from: "1.38.1",
            // 1.38.1 does not build on Linux without it ("missing required module
            // MallocInterposerC"): every allocation of a benchmark goes through it.
            traits: ["MallocInterposer"]
        ),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
    ],
    targets: [
        .target(
            name: "BenchmarkSupport",
            dependencies: [.product(name: "Benchmark", package: "benchmark")]
        ),
        .executableTarget(
            name: "PolicyBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Policy", package: "BeeMesh"),
                .product(name: "MeshTestSupport", package: "BeeMesh"),
            ],
            path: "Benchmarks/PolicyBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "CodecBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Kademlia", package: "BeeMesh"),
                .product(name: "MeshConfiguration", package: "BeeMesh"),
                .product(name: "Proxy", package: "BeeMesh"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/CodecBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
