import ArgumentParser
import Foundation
import Raft
import RaftSimulation

/// `beemesh-raft-sim`: Raft groups on virtual time under seeded faults, every history
/// decided by the linearizability checker, and the timing targets measured
/// (`tools/bench raft-sim`).
@main
struct RaftSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "beemesh-raft-sim",
        abstract: "Run seeded Raft groups under faults, check every history for linearizability, and time failovers."
    )

    @Option(help: "Fault seeds (groups of 3 and 5 alternate).") var seeds = 10_000
    @Option(help: "The first seed; the same seeds give the same output.") var firstSeed: UInt64 = 1
    @Option(help: "Leader-crash trials per timing.") var crashTrials = 1000
    @Option(help: "Partitioned-follower trials (PreVote).") var partitionTrials = 1000
    @Option(help: "Virtual seconds of faults and workload per seed.") var seconds: UInt64 = 20
    @Option(help: "Instead: print the members of this fault seed every half second.") var traceSeed: UInt64?
    @Option(
        help: ArgumentHelp(
            "Instead: append entries to the Raft log in this directory, printing each index once synced.",
            discussion: "The writer of the log's crash test, which kills it with SIGKILL."
        )
    )
    var logWriter: String?
    @Option(help: "With --log-writer: stop after this many entries.") var entries: UInt64?

    func run() throws {
        if let logWriter {
            try LogCrashWorkload.run(directory: logWriter, entries: entries, seed: firstSeed) { index in
                FileHandle.standardOutput.write(Data("acknowledged \(index)\n".utf8))
            }
            return
        }
        if let traceSeed {
            let settings = FaultRuns.settings(seed: traceSeed, seconds: seconds)
            var simulator = RaftSimulator(settings)
            var time: UInt64 = 0
            while time < settings.duration + settings.settle {
                time += 500_000_000
                simulator.run(until: time)
                print(String(format: "%.1f s", Double(time) / 1e9))
                print(simulator.status)
            }
            return
        }
        var failures: [String] = []
        let faults = FaultRuns.run(seeds: seeds, first: firstSeed, seconds: seconds)
        print(
            "## Fault seeds: \(seeds) (groups of 3 and 5, \(seconds) s of faults each, then 8 s without; "
                + "one-way latency 1-8 ms, 0-20 % loss, 0-5 % duplication, 0-2 % clock drift)\n"
        )
        print("| | value | target |")
        print("|---|---:|---|")
        print("| histories not linearizable | \(faults.violations.count) | 0 |")
        print("| seeds with two leaders of a term, or diverging applied entries | \(faults.safety.count) | 0 |")
        let recovered = Double(faults.recovered) / Double(max(1, faults.runs)) * 100
        print(
            "| seeds whose leader commits within 2 election timeouts (4 s) of the last heal | "
                + "\(String(format: "%.2f", recovered)) % | ≥ 99.9 % |"
        )
        print("| operations checked | \(faults.operations) | |")
        print("| acknowledged writes | \(faults.acknowledged) | |")
        print("| messages | \(faults.messages) | |")
        print("| trace hash of the first seed, twice | \(faults.firstHash) = \(faults.replayHash) | equal |")
        for (seed, what) in faults.safety.prefix(5) { failures.append("seed \(seed): \(what)") }
        if !faults.violations.isEmpty {
            failures.append("linearizability violations: seeds \(faults.violations.prefix(10))")
        }
        if recovered < 99.9 { failures.append("recovery after the last heal in \(recovered) % of seeds") }
        for (seed, heal, recovery) in faults.unrecovered.prefix(10) {
            let healed = heal.map { String(format: "%.2f s", Double($0) / 1e9) } ?? "never"
            let took = recovery.map { String(format: "%.2f s", Double($0) / 1e9) } ?? "no commit before the end"
            print("| not recovered: seed \(seed) | healed at \(healed) | \(took) |")
        }
        if faults.firstHash != faults.replayHash { failures.append("the same seed gave another trace") }

        print(
            "\n## Leader crash: from the crash to the new leader's first commit, \(crashTrials) trials each "
                + "(3 members, one-way latency 0.2-2 ms)\n"
        )
        print("| heartbeat | election timeout | p50 | p99 | max | target |")
        print("|---|---|---:|---:|---:|---|")
        for (heartbeat, low, high, p50Target, p99Target) in [
            (UInt64(100), UInt64(1000), UInt64(2000), 1300.0, 2200.0), (50, 300, 600, nil as Double?, 700.0),
        ] {
            let downtimes = CrashRuns.run(
                trials: crashTrials,
                first: firstSeed,
                heartbeat: heartbeat * 1_000_000,
                electionMin: low * 1_000_000,
                electionMax: high * 1_000_000
            )
            // A trial without a new leader counts as infinitely long (it fails the target).
            let (p50, p99, worst) = (
                percentile(downtimes, 0.5), percentile(downtimes, 0.99), downtimes.max() ?? .infinity
            )
            let target = (p50Target.map { "p50 ≤ \(Int($0)) ms, " } ?? "") + "p99 ≤ \(Int(p99Target)) ms"
            print(
                "| \(heartbeat) ms | [\(low), \(high)) ms | \(format(p50)) | \(format(p99)) | \(format(worst)) | \(target) |"
            )
            if let p50Target, !(p50 <= p50Target) {
                failures.append("leader crash p50 \(format(p50)) at \(heartbeat) ms")
            }
            if !(p99 <= p99Target) || downtimes.count != crashTrials {
                failures.append("leader crash p99 \(format(p99)) at \(heartbeat) ms (\(downtimes.count) trials)")
            }
        }

        let partition = PartitionRuns.run(trials: partitionTrials, first: firstSeed)
        print("\n## A follower partitioned for 10 election timeouts, then back: \(partitionTrials) trials\n")
        print("| | PreVote on | target |")
        print("|---|---:|---|")
        print("| term increases | \(partition.termIncreases) | 0 |")
        print("| leader changes | \(partition.leaderChanges) | 0 |")
        if partition.termIncreases > 0 || partition.leaderChanges > 0 {
            failures.append("a rejoining follower disrupted the group")
        }
        print(failures.isEmpty ? "\nPASS" : "\nFAIL: " + failures.joined(separator: "; "))
        if !failures.isEmpty { throw ExitCode(1) }
    }

    func percentile(_ values: [Double], _ q: Double) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int(q * Double(sorted.count)))]
    }

    func format(_ milliseconds: Double) -> String { String(format: "%.0f ms", milliseconds) }
}
