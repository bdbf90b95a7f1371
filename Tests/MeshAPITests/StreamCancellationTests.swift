import Foundation
import MeshAPI
import Testing

/// A stream whose server stays silent ends as soon as it is cancelled: the agent's
/// `logs -f` depends on it to end a follower whose reader went (finding 7 of the node
/// security review).
@Suite struct StreamCancellationTests {
    @Test func aCancelEndsAStreamThatWaitsForASilentServer() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("silent-\(UUID()).sock").path
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer {
            close(listener)
            unlink(path)
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8) + [0])
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0 && listen(listener, 4) == 0)

        let cancellation = StreamCancellation()
        let started = ContinuousClock.now
        let outcome: String = try await withCheckedThrowingContinuation { continuation in
            Thread {
                do {
                    try AdminClient(endpoint: .unix(path: path), timeout: 60).stream(
                        "/logs",
                        cancellation: cancellation
                    ) {
                        _,
                        _ in true
                    }
                    continuation.resume(returning: "ended")
                } catch {
                    continuation.resume(returning: "\(error)")
                }
            }.start()
            Thread {
                let peer = accept(listener, nil, nil)  // connected, and silent
                usleep(200_000)
                cancellation.cancel()
                usleep(500_000)
                close(peer)
            }.start()
        }
        let waited = ContinuousClock.now - started
        #expect(waited < .seconds(5), "the stream ended after \(waited), not at the cancel")
        #expect(outcome == "ended" || outcome.contains("reset") || outcome.contains("cancel"), "\(outcome)")
        #expect(cancellation.isCancelled)
    }
}
