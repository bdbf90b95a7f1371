import Raft

/// Many seeds of random faults: each seed's settings (group size, loss, duplication,
/// drift, membership changes, snapshots) come from the seed too.
public enum FaultRuns {
    public struct Result: Sendable {
        public var runs = 0
        public var violations: [UInt64] = []
        /// Seeds where Raft's own invariants broke (two leaders of a term, diverging
        /// applied entries), with what broke.
        public var safety: [(seed: UInt64, what: String)] = []
        public var recovered = 0
        /// Seeds whose leader did not commit within the bound after the last heal:
        /// the heal's time and the recovery (nil: none before the end).
        public var unrecovered: [(seed: UInt64, heal: UInt64?, recovery: UInt64?)] = []
        public var operations = 0
        public var acknowledged = 0
        public var messages = 0
        public var firstHash: UInt64 = 0
        public var replayHash: UInt64 = 0
    }

    public static func settings(seed: UInt64, seconds: UInt64) -> RaftSimulator.Settings {
        var generator = SeededGenerator(seed: seed &* 0x9E37_79B9)
        var settings = RaftSimulator.Settings(seed: seed)
        settings.members = seed % 2 == 0 ? 5 : 3
        settings.duration = seconds * 1_000_000_000
        settings.loss = Double(generator.next() % 21) / 100
        settings.duplication = Double(generator.next() % 6) / 100
        settings.drift = Double(generator.next() % 3) / 100
        settings.membershipChanges = generator.next() % 3 == 0
        settings.snapshotEvery = generator.next() % 2 == 0 ? 40 : 0
        return settings
    }

    public static func run(seeds: Int, first: UInt64, seconds: UInt64) -> Result {
        var result = Result()
        for seed in first..<(first + UInt64(seeds)) {
            var simulator = RaftSimulator(settings(seed: seed, seconds: seconds))
            let report = simulator.run()
            result.runs += 1
            if !report.verdict.linearizable { result.violations.append(seed) }
            if let first = report.safetyViolations.first { result.safety.append((seed, first)) }
            let bound = 2 * RaftSimulator.Settings(seed: seed).electionMax
            if let recovery = report.recovery, recovery <= bound {
                result.recovered += 1
            } else {
                result.unrecovered.append((seed, report.lastHeal, report.recovery))
            }
            result.operations += report.history.count
            result.acknowledged += report.acknowledgedWrites
            result.messages += report.messages
            if seed == first {
                result.firstHash = report.traceHash
                var again = RaftSimulator(settings(seed: seed, seconds: seconds))
                result.replayHash = again.run().traceHash
            }
        }
        return result
    }
}

/// A steady group whose leader crashes: milliseconds from the crash to the first
/// entry a new leader commits (infinity when none did within 30 s).
public enum CrashRuns {
    public static func run(
        trials: Int,
        first: UInt64,
        heartbeat: UInt64,
        electionMin: UInt64,
        electionMax: UInt64
    ) -> [Double] {
        var downtimes: [Double] = []
        for seed in first..<(first + UInt64(trials)) {
            var settings = RaftSimulator.Settings(seed: seed)
            settings.heartbeat = heartbeat
            settings.electionMin = electionMin
            settings.electionMax = electionMax
            settings.faults = false
            settings.clients = 1
            // Machines of one LAN: 0.2-2 ms one way (the fault seeds use 1-8 ms).
            settings.latency = 200_000...2_000_000
            settings.duration = 60_000_000_000
            settings.settle = 0
            var simulator = RaftSimulator(settings)
            // Until a leader has committed, then a little more (a random phase).
            let time = simulator.runUntilALeaderCommits()
            simulator.run(until: time + seed % 7 * 37_000_000)
            guard let leader = simulator.leader else {
                downtimes.append(.infinity)
                continue
            }
            let crashed = simulator.time
            simulator.crash(leader)
            let commitsBefore = simulator.leaderCommits.count
            var waited: UInt64 = 0
            var downtime = Double.infinity
            while waited < 30_000_000_000 {
                waited += 10_000_000
                simulator.run(until: crashed + waited)
                if let commit = simulator.leaderCommits.dropFirst(commitsBefore).first(where: { $0.member != leader }) {
                    downtime = Double(commit.time - crashed) / 1e6
                    break
                }
            }
            downtimes.append(downtime)
        }
        return downtimes
    }
}

/// A follower cut off for ten election timeouts, then back: PreVote must keep it from
/// bumping the term and unseating the leader.
public enum PartitionRuns {
    public struct Result: Sendable {
        public var termIncreases: UInt64 = 0
        public var leaderChanges = 0
    }

    public static func run(trials: Int, first: UInt64, preVote: Bool = true) -> Result {
        var result = Result()
        for seed in first..<(first + UInt64(trials)) {
            var settings = RaftSimulator.Settings(seed: seed)
            settings.faults = false
            settings.clients = 1
            settings.preVote = preVote
            settings.duration = 120_000_000_000
            settings.settle = 0
            var simulator = RaftSimulator(settings)
            let time = simulator.runUntilALeaderCommits()
            guard let leader = simulator.leader else { continue }
            let follower = (leader + 1 + Int(seed % 2)) % settings.members
            let term = simulator.term(of: leader)
            let elections = simulator.summary.elections
            simulator.isolate(follower)
            simulator.run(until: time + 10 * settings.electionMax)
            simulator.healNetwork()
            simulator.run(until: time + 10 * settings.electionMax + 5_000_000_000)
            let terms = (0..<settings.members).map { simulator.term(of: $0) }.max() ?? term
            result.termIncreases += terms - term
            result.leaderChanges += simulator.summary.elections - elections
        }
        return result
    }
}

extension RaftSimulator {
    /// Runs in steps of 100 ms until a leader has committed; returns the time reached.
    mutating func runUntilALeaderCommits() -> UInt64 {
        var time: UInt64 = 0
        repeat {
            time += 100_000_000
            run(until: time)
        } while leader == nil || leaderCommits.isEmpty
        return time
    }
}
