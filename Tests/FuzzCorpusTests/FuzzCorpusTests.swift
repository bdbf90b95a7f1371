import Foundation
import FuzzTargets
import Testing

/// Every committed input of every fuzz target (`Tests/Fuzz/corpus/TARGET`: the seeds,
/// and each crash a campaign found once it was fixed) goes through its target again on
/// every test run: a fixed crash stays fixed.
@Suite struct FuzzCorpusTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus").path

    @Test(arguments: FuzzTarget.allCases)
    func everyCommittedInputRunsThroughItsTarget(_ target: FuzzTarget) throws {
        let directory = Self.corpus + "/" + target.rawValue
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        #expect(!names.isEmpty, "no seeds for \(target.rawValue)")
        for name in names {
            target.run(Array(try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name))))
        }
    }
}
