import RaftSimulation
import Testing

/// The checker itself: histories known to be linearizable pass, known violations are
/// refused, and an unknown outcome may or may not have taken effect.
@Suite struct LinearizabilityTests {
    static func op(
        _ client: Int,
        _ kind: KVOperation.Kind,
        _ outcome: KVOperation.Outcome,
        _ called: UInt64,
        _ returned: UInt64,
        key: String = "x"
    ) -> KVOperation {
        KVOperation(client: client, key: key, kind: kind, outcome: outcome, called: called, returned: returned)
    }

    @Test func sequentialAndConcurrentHistoriesThatFitPass() {
        let histories: [[KVOperation]] = [
            [Self.op(0, .put("1"), .done, 0, 10), Self.op(1, .get, .value("1"), 20, 30)],
            // Overlapping: the read may see either.
            [Self.op(0, .put("1"), .done, 0, 30), Self.op(1, .get, .value(nil), 10, 20)],
            [Self.op(0, .put("1"), .done, 0, 30), Self.op(1, .get, .value("1"), 10, 20)],
            // An unknown put that took effect, and one that did not.
            [Self.op(0, .put("1"), .unknown, 0, 5), Self.op(1, .get, .value("1"), 50, 60)],
            [Self.op(0, .put("1"), .unknown, 0, 5), Self.op(1, .get, .value(nil), 50, 60)],
            // A swap that happened, one that did not.
            [
                Self.op(0, .put("1"), .done, 0, 10), Self.op(1, .cas(expected: "1", new: "2"), .swapped(true), 20, 30),
                Self.op(2, .cas(expected: "1", new: "3"), .swapped(false), 40, 50),
                Self.op(0, .get, .value("2"), 60, 70),
            ],
            // Keys are independent.
            [Self.op(0, .put("1"), .done, 0, 10, key: "a"), Self.op(1, .get, .value(nil), 20, 30, key: "b")],
            // A failed operation is left out.
            [Self.op(0, .put("1"), .failed, 0, 10), Self.op(1, .get, .value(nil), 20, 30)],
        ]
        for history in histories {
            #expect(LinearizabilityChecker.check(history).linearizable, "\(history)")
        }
    }

    @Test func knownViolationsAreRefused() {
        let histories: [(String, [KVOperation])] = [
            ("a read of a value never written", [Self.op(0, .get, .value("9"), 0, 10)]),
            (
                "a stale read after a completed write",
                [Self.op(0, .put("1"), .done, 0, 10), Self.op(1, .get, .value(nil), 20, 30)]
            ),
            (
                "a read going back in time",
                [
                    Self.op(0, .put("1"), .done, 0, 10), Self.op(0, .put("2"), .done, 20, 30),
                    Self.op(1, .get, .value("1"), 40, 50),
                ]
            ),
            (
                "two reads disagreeing on the order of two writes",
                [
                    Self.op(0, .put("1"), .done, 0, 100), Self.op(1, .put("2"), .done, 0, 100),
                    Self.op(2, .get, .value("1"), 110, 120), Self.op(3, .get, .value("2"), 130, 140),
                    Self.op(2, .get, .value("1"), 150, 160),
                ]
            ),
            (
                "a swap that succeeded against a value that was not there",
                [
                    Self.op(0, .put("1"), .done, 0, 10),
                    Self.op(1, .cas(expected: "7", new: "2"), .swapped(true), 20, 30),
                ]
            ),
            (
                "an acknowledged write lost",
                [
                    Self.op(0, .put("1"), .done, 0, 10), Self.op(1, .put("2"), .done, 20, 30),
                    Self.op(2, .get, .value("1"), 40, 50),
                ]
            ),
            ("a failed write seen", [Self.op(0, .put("1"), .failed, 0, 10), Self.op(1, .get, .value("1"), 20, 30)]),
        ]
        for (name, history) in histories {
            let verdict = LinearizabilityChecker.check(history)
            #expect(!verdict.linearizable, "\(name)")
            #expect(verdict.key == "x", "\(name): the key whose history fails")
        }
    }

    /// Many overlapping writes and reads: the memo keeps the search small.
    @Test func aWideConcurrentHistoryIsDecidedQuickly() {
        var history: [KVOperation] = []
        for client in 0..<12 {
            history.append(Self.op(client, .put("v\(client)"), .done, 0, 1000))
        }
        history.append(Self.op(99, .get, .value("v7"), 1001, 1002))
        let verdict = LinearizabilityChecker.check(history)
        #expect(verdict.linearizable)
        #expect(verdict.steps < 200_000, "\(verdict.steps) steps")
    }
}
