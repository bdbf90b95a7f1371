import Testing

@testable import Proxy

/// Happy Eyeballs between endpoints and passive ejection, event by event on virtual
/// time (nanoseconds): what is dialled when, what wins, what is cancelled.
@Suite struct EndpointRaceTests {
    static let ms: UInt64 = 1_000_000

    @Test func theNextEndpointIsDialledAfterTheStaggerWhileTheFirstIsSilent() {
        var race = EndpointRace(candidates: 3, stagger: 250 * Self.ms)
        #expect(race.start(now: 0) == [.dial(0), .wake(at: 250 * Self.ms)])
        #expect(race.timer(now: 100 * Self.ms) == [.wake(at: 250 * Self.ms)], "an early wake-up waits on")
        #expect(race.timer(now: 250 * Self.ms) == [.dial(1), .wake(at: 500 * Self.ms)])
        // The second answers first: it carries the flow, the silent first is closed and
        // counts as failed.
        #expect(race.answered(1) == [.use(1), .cancel(0), .eject(0)])
        #expect(race.timer(now: 500 * Self.ms) == [], "the race is over")
        #expect(race.dialled == 2, "the third was never needed")
    }

    @Test func aFailureDialsTheNextAtOnceAndTheLastFailureLosesTheRace() {
        var race = EndpointRace(candidates: 2, stagger: 250 * Self.ms)
        #expect(race.start(now: 0) == [.dial(0), .wake(at: 250 * Self.ms)])
        #expect(race.failed(0, now: 10 * Self.ms) == [.dial(1)], "no stagger after a failure; the last needs no timer")
        #expect(race.timer(now: 250 * Self.ms) == [])
        #expect(race.failed(1, now: 20 * Self.ms) == [.exhausted])
        #expect(race.failed(1, now: 30 * Self.ms) == [], "reported once")
    }

    @Test func aFailureWhileAnotherIsPendingWaitsForIt() {
        var race = EndpointRace(candidates: 2, stagger: 250 * Self.ms)
        _ = race.start(now: 0)
        #expect(race.timer(now: 250 * Self.ms) == [.dial(1)])
        #expect(race.failed(1, now: 300 * Self.ms) == [], "the first is still pending")
        #expect(race.answered(0) == [.use(0)])
    }

    @Test func aLateAnswerAfterTheRaceIsOverIsCancelled() {
        var race = EndpointRace(candidates: 2, stagger: 250 * Self.ms)
        _ = race.start(now: 0)
        _ = race.timer(now: 250 * Self.ms)
        #expect(race.answered(0) == [.use(0), .cancel(1)], "dialled after the winner: not ejected")
        #expect(race.answered(1) == [.cancel(1)], "the loser's connection is not used")
    }

    @Test func oneCandidateIsDialledWithoutATimer() {
        var race = EndpointRace(candidates: 1, stagger: 250 * Self.ms)
        #expect(race.start(now: 0) == [.dial(0)])
        #expect(race.failed(0, now: 5_000 * Self.ms) == [.exhausted])
    }

    @Test func noCandidateLosesAtOnce() {
        var race = EndpointRace(candidates: 0, stagger: 250 * Self.ms)
        #expect(race.start(now: 0) == [])
        #expect(race.failed(0, now: 0) == [])
    }

    @Test func aFailedEndpointGoesLastForAPeriodThatDoublesAndAnAnswerRestoresIt() {
        var health = EndpointHealth()
        let endpoints = ["a:1", "b:1", "c:1"]
        #expect(health.order(endpoints, address: { $0 }, now: 0) == endpoints)
        #expect(health.failed("a:1", now: 0) == 1_000 * Self.ms)
        #expect(health.order(endpoints, address: { $0 }, now: 500 * Self.ms) == ["b:1", "c:1", "a:1"])
        #expect(health.order(endpoints, address: { $0 }, now: 1_000 * Self.ms) == endpoints, "back after 1 s")
        #expect(health.failed("a:1", now: 1_000 * Self.ms) == 2_000 * Self.ms, "a second failure in a row: 2 s")
        #expect(health.failed("a:1", now: 1_500 * Self.ms) == nil, "while ejected: the same ejection")
        #expect(health.isEjected("a:1", now: 2_999 * Self.ms) && !health.isEjected("a:1", now: 3_000 * Self.ms))
        #expect(health.failed("b:1", now: 1_100 * Self.ms) == 1_000 * Self.ms)
        // Both ejected: tried after c, the one back sooner first.
        #expect(health.order(endpoints, address: { $0 }, now: 1_200 * Self.ms) == ["c:1", "b:1", "a:1"])
        health.answered("a:1")
        #expect(!health.isEjected("a:1", now: 1_200 * Self.ms))
        #expect(health.failed("a:1", now: 1_200 * Self.ms) == 1_000 * Self.ms, "the count starts again")
    }

    @Test func theEjectionIsCappedAndTheTableForgetsOldFailures() {
        var health = EndpointHealth()
        var now: UInt64 = 0
        var period: UInt64 = 0
        for _ in 0..<40 {
            period = health.failed("a:1", now: now) ?? 0
            now += period  // failing again each time it comes back
        }
        #expect(period == EndpointHealth.longestEjection)
        let later = now + 2 * EndpointHealth.longestEjection + 1
        health.sweep(now: later)
        #expect(health.count == 0)
        #expect(health.failed("a:1", now: later) == EndpointHealth.firstEjection, "forgotten: a first failure again")
    }
}
