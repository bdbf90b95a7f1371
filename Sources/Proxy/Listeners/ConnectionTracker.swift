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
        /// Kept so that the channel's identity stays unique while the entry lives; let go
        /// at the hand-over, so that a closed channel is not held for the relay's life.
        var channel: (any Channel)?
        var cut: @Sendable () -> Void
    }

    private let entries = NIOLockedValueBox<[ObjectIdentifier: Entry]>([:])

    /// Registers `channel` until it closes, or until whatever took it over releases it.
    func track(_ channel: any Channel) {
        let id = ObjectIdentifier(channel)
        entries.withLockedValue { $0[id] = Entry(channel: channel, cut: { channel.close(promise: nil) }) }
        channel.closeFuture.whenComplete { [weak self] _ in
            self?.entries.withLockedValue { entries in
                // Gone already when the connection was handed over: it moved to its key.
                entries[id] = nil
            }
        }
    }

    /// The connection of `channel` lives on without it, known by `key` from now on;
    /// `cut` ends it.
    func handOver(_ channel: any Channel, to key: HandedOverConnection, cut: @escaping @Sendable () -> Void) {
        entries.withLockedValue { entries in
            guard var entry = entries.removeValue(forKey: ObjectIdentifier(channel)) else { return }
            entry.channel = nil
            entry.cut = cut
            entries[ObjectIdentifier(key)] = entry
        }
    }

    /// The connection handed over as `key` ended.
    func release(_ key: HandedOverConnection) {
        _ = entries.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(key)) }
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

/// What a connection taken over by a direct relay is known by in `ConnectionTracker` and
/// `LiveFlows` once its channel is closed: the relay holds it until it ends, so its
/// identity stays unique without keeping the channel (and its pipeline) alive.
final class HandedOverConnection: Sendable {}
