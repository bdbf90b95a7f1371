import Logging
import MeshConfiguration
import MeshTLS
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Policy

/// What every connection handler needs from the running proxy.
struct ProxyEnvironment: Sendable {
    let configuration: ProxyConfiguration
    let credentials: TLSCredentialsSource
    let tracker: ConnectionTracker
    let policies: PolicyStore
    let liveFlows: LiveFlows
    let flows: FlowRecorder
    /// Services found through the node agent's DHT, and mesh DNS's virtual IPs; nil
    /// without `discovery.agent`.
    let discovery: MeshDiscovery?
    /// Where established opaque relays move (nil with `relayEngine: channel`).
    let directRelays: DirectRelays?
    let logger: Logger
    /// Built once per proxy: every component counts through it.
    let metrics: ProxyMetrics
    /// The ports this proxy listens on, as bound.
    let listenerPorts = ListenerPorts()
    /// Endpoints that failed lately, which outbound connections try last.
    let endpointHealth = EndpointHealthTable()

    /// Whether a preface may name `port`: only ports listed in `inbound.ports` (none
    /// when the list is empty), and never one of the proxy's own listeners, which a
    /// peer could otherwise use to borrow this workload's identity.
    func admitsAppPort(_ port: UInt16) -> Bool {
        configuration.inbound.ports.contains(port) && !listenerPorts.contains(Int(port))
    }

    /// A connection from the proxy (to an endpoint or to the app) that will be one side
    /// of a relay: on the event loop of the other side, with the relay's socket options.
    func relayClientBootstrap(on eventLoop: any EventLoop) -> ClientBootstrap {
        ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .channelOption(.autoRead, value: false)
            .channelOption(.writeBufferWaterMark, value: RelayChannelOptions.writeBufferWaterMark)
            .channelOption(.recvAllocator, value: RelayChannelOptions.receiveAllocator)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
    }

    /// Decides a connection by the policies in force and records the decision in its
    /// flow; an admitted one is registered so that a policy change can revoke it.
    func decide(_ request: PolicyRequest, channel: any Channel, flow: Flow?, logger: Logger) -> PolicyDecision {
        let decision = policies.current.evaluate(request)
        metrics.policyDecision(decision)
        for audit in decision.audits {
            logger.info("audit rule matched", metadata: ["audit": "\(audit)", "decision": "\(decision)"])
        }
        flow?.decided(decision)
        if decision.isAllowed {
            liveFlows.register(channel, request: request, flow: flow, logger: logger)
        }
        return decision
    }

    /// On an HTTP port, the gate that decides every request of an admitted connection.
    func httpGate(for request: PolicyRequest, flow: Flow?, logger: Logger) -> HTTPPolicyGate? {
        guard policies.current.httpPorts.contains(request.port) else { return nil }
        return HTTPPolicyGate(
            peer: request.peer,
            port: request.port,
            policies: policies,
            flow: flow,
            recordQuery: configuration.flows.recordQuery,
            metrics: metrics,
            logger: logger
        )
    }

    /// This sidecar's SPIFFE ID now (it may change when the credentials are reissued).
    var identity: String? { credentials.current.identity?.description }

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

/// The ports the proxy's listeners are bound to (known only after binding, port 0 included).
final class ListenerPorts: Sendable {
    private let ports = NIOLockedValueBox<Set<Int>>([])

    func insert(_ port: Int) { ports.withLockedValue { _ = $0.insert(port) } }

    func contains(_ port: Int) -> Bool { ports.withLockedValue { $0.contains(port) } }
}

extension ClientBootstrap {
    /// Connects to `host`: an IP address (app addresses and mesh endpoints are) straight
    /// to its socket address; a name through NIO's resolver and Happy Eyeballs, which
    /// costs about 2% of a sidecar's CPU per new connection when run for a literal.
    func connect(literalOrName host: String, port: Int) -> EventLoopFuture<any Channel> {
        if let address = try? SocketAddress(ipAddress: host, port: port) {
            return connect(to: address)
        }
        return connect(host: host, port: port)
    }
}
