// swift-tools-version:6.0
import PackageDescription

/// BeeMesh: a zero-trust service mesh that needs no cluster.
///
/// Crypto is the distribution's OpenSSL only (libssl/libcrypto through `COpenSSL`);
/// there is deliberately no swift-nio-ssl, BoringSSL or swift-crypto in this graph.
let package = Package(
    name: "BeeMesh",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "beemesh-proxy", targets: ["beemesh-proxy"]),
        .executable(name: "beectl", targets: ["beectl"]),
        .executable(name: "beemesh-agent", targets: ["beemesh-agent"]),
        // For the micro-benchmarks in Benchmarks/, a package of their own.
        .library(name: "Policy", targets: ["Policy"]),
        .library(name: "Kademlia", targets: ["Kademlia"]),
        .library(name: "MeshConfiguration", targets: ["MeshConfiguration"]),
        .library(name: "Proxy", targets: ["Proxy"]),
        .library(name: "MeshTestSupport", targets: ["MeshTestSupport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.0"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CLibYAML",
            pkgConfig: "yaml-0.1",
            providers: [.apt(["libyaml-dev"])]
        ),
        .systemLibrary(name: "CLinux"),
        .systemLibrary(
            name: "CNetfilter",
            pkgConfig: "libnftnl",
            providers: [.apt(["libnftnl-dev", "libmnl-dev"])]
        ),
        .target(name: "MeshNet", dependencies: ["CLinux"]),
        .target(name: "MeshAPI"),
        // What the proxy and the agent share, so that neither imports the other: the
        // sidecar's configuration (which the agent writes by encoding it), host:port,
        // and the processes' main, admin socket and metrics backend.
        .target(
            name: "MeshConfiguration",
            dependencies: [
                "MeshIdentity",
                "MeshNet",
                "Policy",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "MeshProcess",
            dependencies: [
                "MeshAPI",
                "MeshNet",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The DHT's state machine and its simulator run thousands of nodes in the test
        // suite: optimized even in debug builds, so that the simulation fits CI's time.
        .target(
            name: "Kademlia",
            dependencies: ["MeshIdentity"],
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        // Raft as a pure state machine; its simulator runs thousands of seeded groups.
        .target(
            name: "Raft",
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        // A Raft group's write-ahead log and snapshot on disk (the I/O Raft leaves out).
        .target(
            name: "RaftPersistence",
            dependencies: ["Raft"],
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        // A Raft member for real: the shell around `Raft` on an event loop, the
        // workload's key-value state, and the transport between agents.
        .target(
            name: "RaftHost",
            dependencies: [
                "MeshAPI",
                "MeshConfiguration",
                "MeshIdentity",
                "MeshTLS",
                "MeshProcess",
                "Raft",
                "RaftPersistence",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "Capture",
            dependencies: ["CNetfilter", "MeshNet"]
        ),
        .target(
            name: "Policy",
            dependencies: ["CLibYAML", "CLinux", "MeshNet"]
        ),
        .target(
            name: "MeshIdentity",
            dependencies: ["COpenSSL", "MeshNet"]
        ),
        .target(
            name: "MeshTLS",
            dependencies: [
                "COpenSSL",
                "MeshIdentity",
                "MeshNet",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "Proxy",
            dependencies: [
                "Capture",
                "CLinux",
                "Kademlia",
                "MeshAPI",
                "MeshConfiguration",
                "MeshNet",
                "MeshIdentity",
                "MeshProcess",
                "Policy",
                "MeshTLS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "beemesh-proxy",
            dependencies: [
                "Capture",
                "MeshConfiguration",
                "MeshProcess",
                "Proxy",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // One sidecar runs per pod, so its resident memory counts many times on a
            // node. lld packs the executable's relative relocations (DT_RELR, glibc
            // 2.36+), so startup no longer reads ~2 MB of relocation tables; the
            // executable exports no symbols (nothing loads against it), so the dynamic
            // loader no longer pages through a 1.3 MB export table; and the functions
            // that start-up and relaying run are placed together (the order file and
            // tools/order-functions explain how it is made).
            linkerSettings: [
                .unsafeFlags(
                    [
                        "-use-ld=lld",
                        "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
                        "-Xlinker", "--no-export-dynamic",
                        "-Xlinker", "--symbol-ordering-file=\(Context.packageDirectory)/deploy/beemesh-proxy.order",
                        "-Xlinker", "--no-warn-symbol-ordering",
                    ],
                    .when(platforms: [.linux])
                )
            ]
        ),
        .target(
            name: "Agent",
            dependencies: [
                "Capture",
                "Raft",
                "RaftHost",
                "RaftPersistence",
                "CLinux",
                "Kademlia",
                "MeshAPI",
                "MeshConfiguration",
                "MeshIdentity",
                "MeshNet",
                "MeshProcess",
                "MeshTLS",
                "Policy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "beemesh-agent",
            dependencies: [
                "Agent",
                "MeshConfiguration",
                "MeshProcess",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "beectl",
            dependencies: [
                "MeshAPI",
                "Policy",
                "MeshIdentity",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "MeshTestSupport",
            dependencies: ["MeshNet", "Policy"],
            path: "Tests/MeshTestSupport"
        ),
        .testTarget(
            name: "CaptureTests",
            dependencies: ["Capture", "MeshNet", "MeshTestSupport"]
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "Capture", "Kademlia", "MeshAPI", "MeshIdentity", "MeshNet", "MeshTestSupport", "RaftSimulation",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "PolicyTests",
            dependencies: ["Policy", "MeshNet", "MeshTestSupport"]
        ),
        .testTarget(
            name: "KademliaTests",
            dependencies: ["Kademlia", "KademliaSimulation", "MeshIdentity"]
        ),
        .testTarget(
            name: "RaftTests",
            dependencies: [
                "MeshAPI", "MeshIdentity", "MeshTestSupport", "MeshTLS", "Raft", "RaftHost", "RaftPersistence",
                "RaftSimulation",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "RaftSimulation",
            dependencies: ["Raft", "RaftPersistence"],
            path: "Tests/RaftSimulation",
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        .executableTarget(
            name: "beemesh-raft-node",
            dependencies: [
                "MeshConfiguration",
                "MeshIdentity",
                "Raft",
                "RaftHost",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "beemesh-raft-sim",
            dependencies: [
                "Raft",
                "RaftPersistence",
                "RaftSimulation",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "KademliaSimulation",
            dependencies: ["Kademlia"],
            path: "Tests/KademliaSimulation",
            swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]
        ),
        // The parsers' fuzz targets; the executable is libFuzzer's when built by
        // tools/fuzz (-sanitize=fuzzer,address -D FUZZING), a corpus replayer otherwise.
        .target(
            name: "FuzzTargets",
            dependencies: [
                "Agent", "Kademlia", "MeshAPI", "MeshConfiguration", "MeshIdentity", "Policy", "Proxy", "Raft",
                "RaftHost", "RaftPersistence", .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Tests/FuzzTargets"
        ),
        .executableTarget(
            name: "beemesh-fuzz",
            dependencies: ["FuzzTargets"],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])],
            // gold fails on the sanitizers' objects (an internal error while it reports).
            linkerSettings: [.unsafeFlags(["-use-ld=lld"], .when(platforms: [.linux]))]
        ),
        .executableTarget(
            name: "beemesh-dht-sim",
            dependencies: [
                "Kademlia",
                "KademliaSimulation",
                "MeshIdentity",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "AgentTests",
            dependencies: [
                "Agent",
                "MeshConfiguration",
                "MeshNet",
                "MeshProcess",
                "Policy",
                .product(name: "Prometheus", package: "swift-prometheus"),
                "Kademlia",
                "MeshAPI",
                "MeshIdentity",
                "MeshTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "FuzzCorpusTests",
            dependencies: ["FuzzTargets"]
        ),
        .testTarget(
            name: "MeshConfigurationTests",
            dependencies: ["MeshConfiguration", "MeshIdentity", "MeshNet"]
        ),
        .testTarget(
            name: "MeshAPITests",
            dependencies: ["MeshAPI"]
        ),
        .testTarget(
            name: "MeshNetTests",
            dependencies: ["MeshNet"]
        ),
        .testTarget(
            name: "MeshIdentityTests",
            dependencies: ["MeshIdentity"]
        ),
        .testTarget(
            name: "MeshTLSTests",
            dependencies: [
                "MeshTLS",
                "MeshIdentity",
                "MeshTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "ProxyTests",
            dependencies: [
                "Capture",
                "Kademlia",
                "MeshConfiguration",
                "MeshNet",
                "MeshProcess",
                "Proxy",
                "MeshIdentity",
                "MeshAPI",
                "MeshTLS",
                "MeshTestSupport",
                "COpenSSL",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
