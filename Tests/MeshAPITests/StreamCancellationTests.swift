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

        // The server accepts and stays silent until the stream has returned (at most
        // 30 s): only the cancel can end the stream's wait, and it ends it "cancelled".
        let cancellation = StreamCancellation()
        let returned = DispatchSemaphore(value: 0)
        let outcome: String = try await withCheckedThrowingContinuation { continuation in
            Thread {
                defer { returned.signal() }
                do {
                    try AdminClient(endpoint: .unix(path: path), timeout: 60).stream(
                        "/logs",
                        cancellation: cancellation
                    ) {
                        _,
                        _ in true
                    }
                    continuation.resume(returning: "ended without a cancel")
                } catch {
                    continuation.resume(returning: "\(error)")
                }
            }.start()
            Thread {
                let peer = accept(listener, nil, nil)
                usleep(100_000)
                cancellation.cancel()
                _ = returned.wait(timeout: .now() + 30)
                close(peer)
            }.start()
        }
        #expect(outcome.hasSuffix("cancelled"), "\(outcome)")
        #expect(cancellation.isCancelled)
    }
}
