import ArgumentParser
import Foundation
import MeshTestSupport
import Policy

/// Benchmarks that run in one process (`tools/bench policy` builds and runs this in
/// release mode). Not shipped.
@main
struct BeeMeshBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "beemesh-bench",
        abstract: "In-process benchmarks for tools/bench.",
        subcommands: [PolicyDecisions.self]
    )
}

/// Decision time with the index against a linear scan of the same set (the baseline),
/// and the time to reload the whole set from YAML files.
struct PolicyDecisions: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "policy")

    @Option(help: "Policies in the set.")
    var policies = 1000

    @Option(help: "Rules per policy.")
    var rules = 10

    @Option(help: "Decisions timed (each singly).")
    var decisions = 200_000

    @Option(help: "Decisions timed with the linear baseline.")
    var baselineDecisions = 2000

    @Option(help: "Full reloads timed.")
    var reloads = 20

    @Option(help: "Write the YAML files here (default: a temporary directory).")
    var directory: String?

    func run() throws {
        var synthetic = SyntheticPolicies(policies: policies, rulesPerPolicy: rules, seed: 42)
        let set = PolicySet(synthetic.policies, for: synthetic.workload)
        print("set.policies_selected=\(set.policies.count)")
        print("set.rules=\(set.ruleCount)")
        let requests = (0..<decisions).map { _ in synthetic.nextRequest() }

        var indexed: [Duration] = []
        var linear: [Duration] = []
        indexed.reserveCapacity(requests.count)
        var allowed = 0
        let clock = ContinuousClock()
        for request in requests {
            let start = clock.now
            let decision = set.evaluate(request)
            indexed.append(clock.now - start)
            if decision.isAllowed { allowed += 1 }
        }
        for request in requests.prefix(baselineDecisions) {
            let start = clock.now
            _ = set.evaluateWithoutIndex(request)
            linear.append(clock.now - start)
        }
        print("decisions=\(requests.count)")
        print("allowed=\(allowed)")
        report("indexed", indexed)
        report("linear", linear)

        let folder = directory ?? NSTemporaryDirectory() + "beemesh-policy-bench-\(getpid())"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: folder) } }
        for (name, text) in synthetic.yamlFiles(policiesPerFile: 10) {
            try text.write(toFile: folder + "/" + name, atomically: true, encoding: .utf8)
        }
        var reloadTimes: [Duration] = []
        var phases: [String: [Duration]] = [:]
        var loaded = 0
        for _ in 0..<reloads {
            let start = clock.now
            var library = PolicyLibrary()
            let contents = PolicyDirectory.read(folder)
            let read = clock.now
            let update = library.update(contents)
            let parsed = clock.now
            let compiled = PolicySet(library.policies, for: synthetic.workload)
            let end = clock.now
            reloadTimes.append(end - start)
            phases["reload_read", default: []].append(read - start)
            phases["reload_parse", default: []].append(parsed - read)
            phases["reload_compile", default: []].append(end - parsed)
            guard update.rejected.isEmpty else { throw ValidationError("generated files refused: \(update.rejected)") }
            loaded = compiled.ruleCount
        }
        // A change to one file of the set: only that file is parsed again, then the set
        // is compiled.
        var library = PolicyLibrary()
        _ = library.update(PolicyDirectory.read(folder))
        var incremental: [Duration] = []
        let changed = folder + "/" + (synthetic.yamlFiles(policiesPerFile: 10).keys.sorted().first ?? "")
        for round in 0..<reloads {
            let original = try String(contentsOfFile: changed, encoding: .utf8)
            try (original + "\n# edit \(round)\n").write(toFile: changed, atomically: true, encoding: .utf8)
            let start = clock.now
            let update = library.update(PolicyDirectory.read(folder))
            _ = PolicySet(library.policies, for: synthetic.workload)
            incremental.append(clock.now - start)
            guard update.rejected.isEmpty else { throw ValidationError("edited file refused: \(update.rejected)") }
        }
        report("reload_one_file", incremental)
        print("reload.rules=\(loaded)")
        report("reload", reloadTimes)
        for (name, samples) in phases.sorted(by: { $0.key < $1.key }) { report(name, samples) }
    }

    private func report(_ name: String, _ samples: [Duration]) {
        guard !samples.isEmpty else { return }
        let sorted = samples.sorted()
        func at(_ quantile: Double) -> Double {
            let duration = sorted[min(sorted.count - 1, Int(Double(sorted.count) * quantile))]
            return Double(duration.components.seconds) * 1e6 + Double(duration.components.attoseconds) / 1e12
        }
        print(String(format: "%@.p50_us=%.3f", name, at(0.5)))
        print(String(format: "%@.p99_us=%.3f", name, at(0.99)))
        print(String(format: "%@.max_us=%.3f", name, at(1.0)))
    }
}
