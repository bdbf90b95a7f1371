import Raft
import RaftSimulation
import Testing

/// Seeded groups under faults (a few hundred seeds here; `tools/bench raft-sim` runs
/// 10,000): every history linearizable, a leader back soon after the last heal, the
/// same seed the same trace, and PreVote keeping a rejoining follower harmless.
@Suite struct RaftSimulationTests {
    @Test func theSameSeedGivesTheSameTraceAndAnotherSeedAnother() {
        var first = RaftSimulator(FaultRuns.settings(seed: 11, seconds: 6))
        var again = RaftSimulator(FaultRuns.settings(seed: 11, seconds: 6))
        var other = RaftSimulator(FaultRuns.settings(seed: 12, seconds: 6))
        let (a, b, c) = (first.run(), again.run(), other.run())
        #expect(a.traceHash == b.traceHash && a.history == b.history)
        #expect(a.traceHash != c.traceHash)
        #expect(a.acknowledgedWrites > 0, "the workload ran")
    }

    @Test func historiesUnderFaultsAreLinearizableAndALeaderReturnsAfterTheLastHeal() {
        let result = FaultRuns.run(seeds: 300, first: 1000, seconds: 12)
        #expect(result.violations.isEmpty, "seeds \(result.violations)")
        #expect(result.recovered >= 299, "\(result.recovered) of \(result.runs) recovered within 4 s")
        #expect(result.acknowledged > 100_000, "\(result.acknowledged) acknowledged writes")
    }

    /// The checker is not blind to what the simulator produces: one stale read added
    /// (the value a completed write replaced, read after that write returned; every
    /// written value is unique) makes the history fail.
    @Test func aCorruptedHistoryIsRefused() throws {
        var simulator = RaftSimulator(FaultRuns.settings(seed: 5, seconds: 6))
        var report = simulator.run()
        #expect(LinearizabilityChecker.check(report.history).linearizable)
        let writes = report.history.indices.filter {
            if case .put = report.history[$0].kind { report.history[$0].outcome == .done } else { false }
        }
        let key = report.history[try #require(writes.last)].key
        let onKey = writes.filter { report.history[$0].key == key }
        let (older, newer) = (report.history[onKey[onKey.count - 2]], report.history[onKey[onKey.count - 1]])
        guard case .put(let replaced) = older.kind, older.returned < newer.called else {
            Issue.record("the last two writes of \(key) overlap; pick another seed")
            return
        }
        let later = newer.returned + 1
        report.history.append(
            KVOperation(client: 99, key: key, kind: .get, outcome: .value(replaced), called: later, returned: later + 1)
        )
        #expect(!LinearizabilityChecker.check(report.history).linearizable)
    }

    @Test func aRejoiningFollowerDisruptsNothingWithPreVoteAndDoesWithout() {
        let with = PartitionRuns.run(trials: 30, first: 1)
        #expect(with.termIncreases == 0 && with.leaderChanges == 0, "\(with)")
        let without = PartitionRuns.run(trials: 30, first: 1, preVote: false)
        #expect(without.termIncreases > 0, "the control: without PreVote the term moves")
    }

    @Test func aCrashedLeaderIsReplacedWithinTheElectionBound() {
        let downtimes = CrashRuns.run(
            trials: 60,
            first: 1,
            heartbeat: 100_000_000,
            electionMin: 1_000_000_000,
            electionMax: 2_000_000_000
        )
        #expect(downtimes.count == 60)
        #expect(downtimes.allSatisfy { $0 > 800 && $0 < 2500 }, "\(downtimes.sorted().suffix(3)) ms")
    }
}
