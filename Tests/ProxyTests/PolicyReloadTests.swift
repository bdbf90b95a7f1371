import Foundation
import MeshTestSupport
import NIOCore
import Testing

/// Policies on real sidecars: dropped in, changed, broken and swapped while traffic runs.
@Suite struct PolicyReloadTests {
    static let denyFrontend = """
        apiVersion: beemesh.io/v1
        kind: MeshPolicy
        metadata: {name: no-frontend, namespace: default}
        spec:
          action: DENY
          rules: [{from: [{identities: ["spiffe://example.org/ns/default/sa/frontend"]}]}]
        """

    /// Writes `text` the way configuration tools do: a hidden temporary file, renamed.
    static func dropIn(_ text: String, as name: String, in directory: String) throws {
        let temporary = directory + "/.\(name).tmp"
        try text.write(toFile: temporary, atomically: false, encoding: .utf8)
        guard rename(temporary, directory + "/" + name) == 0 else { throw SocketError("rename failed: \(errno)") }
    }

    /// Seconds until a new connection through the route no longer echoes (nil: never,
    /// within `limit`).
    static func secondsUntilRefused(port: Int, limit: Double = 3) -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < limit {
            if let socket = try? BlockingSocket(port: port, timeoutSeconds: 2),
                (try? socket.roundTrip("probe;")) != "probe;"
            {
                return Date().timeIntervalSince(start)
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return nil
    }

    @Test func aDenyDroppedInRefusesNewConnectionsAndCutsTheLiveOne() async throws {
        let (_, pair) = try await MeshPair.serving { TestApp.Echo() }
        let port = pair.routePort()
        let directory = pair.policyDirectory
        let outcome = try await blocking { () throws -> (String, Double?, String) in
            let live = try BlockingSocket(port: port)
            let before = try live.roundTrip("one;")
            try Self.dropIn(Self.denyFrontend, as: "10-deny.yaml", in: directory)
            let refusedAfter = Self.secondsUntilRefused(port: port)
            let after = (try? live.roundTrip("two;")) ?? "error"
            return (before, refusedAfter, after)
        }
        #expect(outcome.0 == "one;")
        let seconds = try #require(outcome.1, "new connections were still admitted 3 s after the deny")
        #expect(seconds < 1, "refused after \(seconds) s")
        #expect(outcome.2 != "two;", "the live flow was revoked: \(outcome.2)")
        // Revoked flows close asynchronously (on their event loop), each soon after.
        let server = pair.server
        try await waitUntil("every admitted flow was revoked and closed", seconds: 5) { server.liveFlowCount == 0 }
    }

    @Test func aBrokenFileChangesNothingAndIsReported() async throws {
        let (_, pair) = try await MeshPair.serving { TestApp.Echo() }
        let port = pair.routePort()
        let directory = pair.policyDirectory
        let live = try await blocking { () throws -> BlockingSocket in
            let live = try BlockingSocket(port: port)
            _ = try live.roundTrip("one;")
            // The allowing file itself breaks (a typo in an edit) and a new, broken deny arrives.
            try Self.dropIn(MeshPair.allowDefaultNamespace + "\n  oops: [", as: "00-pair.yaml", in: directory)
            try Self.dropIn(
                Self.denyFrontend.replacingOccurrences(of: "DENY", with: "DENNY"),
                as: "10-deny.yaml",
                in: directory
            )
            return live
        }
        // Once the proxy has read both files (and refused both), nothing has changed.
        let server = pair.server
        try await waitUntil("both broken files are read") { server.policyErrors.count == 2 }
        let outcome = try await blocking { () throws -> (String, String) in
            let fresh = try BlockingSocket(port: port)
            return (try live.roundTrip("two;"), try fresh.roundTrip("three;"))
        }
        #expect(outcome.0 == "two;" && outcome.1 == "three;")
        let errors = pair.server.policyErrors.map(\.description)
        #expect(errors.count == 2, "\(errors)")
        #expect(errors.contains { $0.contains("00-pair.yaml:") && $0.contains("not valid YAML") }, "\(errors)")
        #expect(errors.contains { $0.contains("10-deny.yaml:5: spec.action: unknown action 'DENNY'") }, "\(errors)")
    }

    @Test func aConfigMapStyleSymlinkSwapApplies() async throws {
        // Kubernetes volumes: policy.yaml -> ..data/policy.yaml, ..data -> ..v1 (swapped by rename).
        let (_, pair) = try await MeshPair.serving({ TestApp.Echo() }, policies: { _ in "" })
        let directory = pair.policyDirectory
        try FileManager.default.removeItem(atPath: directory + "/00-pair.yaml")
        for (version, text) in [("..v1", MeshPair.allowDefaultNamespace), ("..v2", Self.denyFrontend)] {
            try FileManager.default.createDirectory(
                atPath: directory + "/" + version,
                withIntermediateDirectories: false
            )
            try text.write(toFile: directory + "/\(version)/policy.yaml", atomically: true, encoding: .utf8)
        }
        try FileManager.default.createSymbolicLink(atPath: directory + "/..data", withDestinationPath: "..v1")
        try FileManager.default.createSymbolicLink(
            atPath: directory + "/policy.yaml",
            withDestinationPath: "..data/policy.yaml"
        )
        let port = pair.routePort()
        let outcome = try await blocking { () throws -> (Double?, Double?) in
            let admitted = Self.secondsUntilEchoed(port: port)
            try FileManager.default.createSymbolicLink(atPath: directory + "/..data_tmp", withDestinationPath: "..v2")
            guard rename(directory + "/..data_tmp", directory + "/..data") == 0 else { throw SocketError("rename") }
            return (admitted, Self.secondsUntilRefused(port: port))
        }
        #expect(outcome.0 != nil, "the ..v1 allow never applied")
        let seconds = try #require(outcome.1, "the ..v2 deny never applied")
        #expect(seconds < 1, "refused after \(seconds) s")
    }

    static func secondsUntilEchoed(port: Int, limit: Double = 3) -> Double? {
        let start = Date()
        while Date().timeIntervalSince(start) < limit {
            if let socket = try? BlockingSocket(port: port, timeoutSeconds: 2),
                (try? socket.roundTrip("probe;")) == "probe;"
            {
                return Date().timeIntervalSince(start)
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return nil
    }
}
