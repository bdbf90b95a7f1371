import NIOConcurrencyHelpers
import NIOCore

/// The proxy's live downstream connections, so that a graceful drain can wait for them
/// and cut the ones still open at the deadline.
///
/// A connection is known by its downstream channel while the channel relays it; a
/// direct relay that takes the connection over (and closes the channel) hands over how
/// to cut it, and releases the entry when it ends.
final class ConnectionTracker: Sendable {
    private struct Entry {
        /// Kept so that the channel's identity stays unique while the entry lives.
        let channel: any Channel
        var cut: @Sendable () -> Void
        var handedOver = false
    }

    private let entries = NIOLockedValueBox<[ObjectIdentifier: Entry]>([:])

    /// Registers `channel` until it closes, or until whatever took it over releases it.
    func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        entries.withLockedValue { $0[id] = Entry(channel: channel, cut: { channel.close(promise: nil) }) }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.entries.withLockedValue { entries in
                if entries[id]?.handedOver == false { entries[id] = nil }
            }
        }
    }

    /// The connection of `channel` lives on without it; `cut` ends it.
    func handOver(_ channel: any Channel, cut: @escaping @Sendable () -> Void) {
        entries.withLockedValue { entries in
            entries[ObjectIdentifier(channel)]?.cut = cut
            entries[ObjectIdentifier(channel)]?.handedOver = true
        }
    }

    /// The connection handed over from `channel` ended.
    func release(_ channel: any Channel) {
        _ = entries.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    var count: Int { entries.withLockedValue { $0.count } }

    /// Waits until every tracked connection closed, or the deadline passes; then cuts
    /// what is left. Returns how many connections were cut.
    /// `atDeadline` runs just before the cut.
    func drain(deadline: ContinuousClock.Instant, atDeadline: () -> Void = {}) async -> Int {
        while count > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let remaining = entries.withLockedValue { Array($0.keys) }
        if !remaining.isEmpty { atDeadline() }
        for id in remaining {
            // Read now, not with the keys: a connection may have moved to a direct relay.
            entries.withLockedValue { $0[id]?.cut }?()
        }
        return remaining.count
    }
}
