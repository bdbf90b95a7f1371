import Benchmark
import BenchmarkSupport
import Foundation
import MeshTestSupport
import Policy

/// Policy decisions and reloads with 10,000 rules in 1,000 policies that all select
/// the workload (`SyntheticPolicies`, seed 42): a decision with the index, the linear
/// scan of the same set (the baseline the index is judged against), and the reload of
/// the whole set from its YAML files, in its three phases, and after one file changed.
/// `tools/bench policy` reads the percentiles of these; `tools/bench micro --check`
/// holds them to `Thresholds/`.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: MicroThresholds.metrics,
        timeUnits: .nanoseconds,
        warmupIterations: 10,
        thresholds: MicroThresholds.thresholds
    )

    // What one iteration costs the harness itself (its clock reads and bookkeeping):
    // part of every single-decision figure below.
    // Its own allocations vary between runs: only its time is held to a threshold.
    Benchmark(
        "empty_iteration",
        configuration: .init(
            maxDuration: .seconds(3),
            maxIterations: 200_000,
            thresholds: MicroThresholds.timeOnly
        )
    ) { benchmark in
        for _ in benchmark.scaledIterations { blackHole(1) }
    }

    Benchmark(
        "decision_indexed",
        configuration: .init(maxDuration: .seconds(10), maxIterations: 200_000)
    ) { benchmark, fixture in
        var requests = fixture.requests.makeIterator()
        for _ in benchmark.scaledIterations {
            blackHole(fixture.set.evaluate(requests.next()!))
        }
    } setup: {
        try PolicyFixture.shared()
    }

    Benchmark(
        "decision_linear_scan",
        configuration: .init(maxDuration: .seconds(10), maxIterations: 2_000)
    ) { benchmark, fixture in
        var requests = fixture.requests.makeIterator()
        for _ in benchmark.scaledIterations {
            blackHole(fixture.set.evaluateWithoutIndex(requests.next()!))
        }
    } setup: {
        try PolicyFixture.shared()
    }

    let reload = Benchmark.Configuration(
        warmupIterations: 1,
        maxDuration: .seconds(20),
        maxIterations: 20,
        thresholds: MicroThresholds.manyAllocations
    )

    Benchmark("reload", configuration: reload) { benchmark, fixture in
        for _ in benchmark.scaledIterations {
            var library = PolicyLibrary()
            _ = library.update(PolicyDirectory.read(fixture.folder))
            blackHole(PolicySet(library.policies, for: fixture.workload))
        }
    } setup: {
        try PolicyFixture.shared()
    }

    Benchmark("reload_read", configuration: reload) { benchmark, fixture in
        for _ in benchmark.scaledIterations {
            blackHole(PolicyDirectory.read(fixture.folder))
        }
    } setup: {
        try PolicyFixture.shared()
    }

    // Each phase timed on its own, in the order a reload runs them: read the files,
    // parse them into a fresh library, compile the set from what was just parsed.
    Benchmark("reload_parse", configuration: reload) { benchmark, fixture in
        for _ in benchmark.scaledIterations {
            let contents = PolicyDirectory.read(fixture.folder)
            var library = PolicyLibrary()
            benchmark.startMeasurement()
            blackHole(library.update(contents))
            benchmark.stopMeasurement()
        }
    } setup: {
        try PolicyFixture.shared()
    }

    Benchmark("reload_compile", configuration: reload) { benchmark, fixture in
        for _ in benchmark.scaledIterations {
            var library = PolicyLibrary()
            _ = library.update(PolicyDirectory.read(fixture.folder))
            benchmark.startMeasurement()
            blackHole(PolicySet(library.policies, for: fixture.workload))
            benchmark.stopMeasurement()
        }
    } setup: {
        try PolicyFixture.shared()
    }

    // Only the edited file is parsed again, then the set is compiled.
    Benchmark("reload_one_file_changed", configuration: reload) { benchmark, fixture in
        var library = PolicyLibrary()
        _ = library.update(PolicyDirectory.read(fixture.folder))
        let original = try! String(contentsOfFile: fixture.firstFile, encoding: .utf8)
        defer { try? original.write(toFile: fixture.firstFile, atomically: true, encoding: .utf8) }
        for round in benchmark.scaledIterations {
            try! (original + "\n# edit \(round) \(UInt64.random(in: 0...UInt64.max))\n")
                .write(toFile: fixture.firstFile, atomically: true, encoding: .utf8)
            benchmark.startMeasurement()
            let update = library.update(PolicyDirectory.read(fixture.folder))
            blackHole(PolicySet(library.policies, for: fixture.workload))
            benchmark.stopMeasurement()
            precondition(update.rejected.isEmpty, "edited file refused: \(update.rejected)")
        }
    } setup: {
        try PolicyFixture.shared()
    }
}

/// The policy set, its requests and its YAML files, made once per process.
struct PolicyFixture: @unchecked Sendable {
    let set: PolicySet
    let workload: Workload
    let requests: [PolicyRequest]
    let folder: String
    let firstFile: String

    nonisolated(unsafe) private static var made: PolicyFixture?

    static func shared() throws -> PolicyFixture {
        if let made { return made }
        var synthetic = SyntheticPolicies(policies: 1000, rulesPerPolicy: 10, seed: 42)
        // `tools/bench policy` keeps the files for its sidecar: BEEMESH_BENCH_POLICY_FILES.
        let kept = ProcessInfo.processInfo.environment["BEEMESH_BENCH_POLICY_FILES"]
        let folder = kept ?? NSTemporaryDirectory() + "beemesh-policy-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let files = synthetic.yamlFiles(policiesPerFile: 10)
        for (name, text) in files {
            try text.write(toFile: folder + "/" + name, atomically: true, encoding: .utf8)
        }
        if kept == nil {
            atexit {
                try? FileManager.default.removeItem(atPath: NSTemporaryDirectory() + "beemesh-policy-bench-\(getpid())")
            }
        }
        var library = PolicyLibrary()
        let update = library.update(PolicyDirectory.read(folder))
        guard update.rejected.isEmpty else { throw FixtureError.refused("\(update.rejected)") }
        let set = PolicySet(synthetic.policies, for: synthetic.workload)
        // `tools/bench policy` reports the set as 10,000 rules selecting the workload.
        guard set.ruleCount == 10_000, set.policies.count == 1000 else {
            throw FixtureError.refused("\(set.ruleCount) rules in \(set.policies.count) policies, not 10,000 in 1,000")
        }
        let fixture = PolicyFixture(
            set: set,
            workload: synthetic.workload,
            requests: (0..<200_100).map { _ in synthetic.nextRequest() },
            folder: folder,
            firstFile: folder + "/" + files.keys.sorted()[0]
        )
        made = fixture
        return fixture
    }

    enum FixtureError: Error { case refused(String) }
}
