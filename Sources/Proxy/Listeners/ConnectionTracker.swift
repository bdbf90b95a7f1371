import NIOConcurrencyHelpers
import NIOCore

/// The proxy's live downstream connections, so that a graceful drain can wait for them
/// and cut the ones still open at the deadline.
final class ConnectionTracker: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    /// Registers `channel` until it closes.
    func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        channels.withLockedValue { $0[id] = channel }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.channels.withLockedValue { _ = $0.removeValue(forKey: id) }
        }
    }

    var count: Int { channels.withLockedValue { $0.count } }

    /// Waits until every tracked connection closed, or the deadline passes; then closes
    /// what is left. Returns how many connections were cut.
    /// `atDeadline` runs just before the cut.
    func drain(deadline: ContinuousClock.Instant, atDeadline: () -> Void = {}) async -> Int {
        while count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let remaining = channels.withLockedValue { Array($0.values) }
        if !remaining.isEmpty { atDeadline() }
        for channel in remaining { channel.close(promise: nil) }
        return remaining.count
    }
}
