import Logging
import MeshTLS
import NIOCore

/// What every connection handler needs from the running proxy.
struct ProxyEnvironment: Sendable {
    let configuration: ProxyConfiguration
    let credentials: TLSCredentialsSource
    let tracker: ConnectionTracker
    let logger: Logger

    var handshakeTimeout: TimeAmount { .seconds(configuration.timeouts.handshake) }
    var prefaceTimeout: TimeAmount { .seconds(configuration.timeouts.preface) }
    var connectTimeout: TimeAmount { .seconds(configuration.timeouts.connect) }
    var idleTimeout: TimeAmount { .seconds(configuration.timeouts.idle) }
}

extension TimeAmount {
    static func seconds(_ value: Double) -> TimeAmount {
        .nanoseconds(Int64(value * 1_000_000_000))
    }
}

/// Socket options of every relayed channel: reads on demand (backpressure) and
/// half-close carried through rather than turned into a full close.
enum RelayChannelOptions {
    /// Write queue bounds per channel: reading from the partner pauses above `high`.
    static let writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 32 * 1024, high: 128 * 1024)
    /// Receive allocation: starts at 2 KiB and grows towards 64 KiB per read while reads
    /// come back full. NIO keeps the last receive buffer of each channel for reuse, so
    /// the starting size is what every idle connection holds.
    static let receiveAllocator = AdaptiveRecvByteBufferAllocator(minimum: 512, initial: 2048, maximum: 64 * 1024)
}
