import Logging
import MeshTLS
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// An established opaque relay that left its channels: two sockets, a `RelayPump`
/// between them, and what the proxy's bookkeeping needs when it ends.
///
/// Built on the connection's event loop, then owned by one `DirectRelayLoop`'s thread;
/// other threads hold it only to name it in a command to that loop.
final class DirectRelay: @unchecked Sendable {
    let pump: RelayPump<RelaySocket>
    private let downstream: RelaySocket
    private let upstream: RelaySocket
    let flow: Flow?
    let logger: Logger
    /// Bytes the set-up read before the relay existed, and whether the downstream
    /// input had already ended.
    private var earlyFromDownstream: ByteBuffer
    private var earlyFromUpstream: ByteBuffer
    private let downstreamEnded: Bool
    private let onEnd: @Sendable () -> Void
    private let cut: RelayCut
    private let census: RelayCensus

    // The loop's bookkeeping.
    var slot = -1

    init(
        downstream: RelaySocket,
        upstream: RelaySocket,
        flow: Flow?,
        logger: Logger,
        early: (fromDownstream: ByteBuffer, fromUpstream: ByteBuffer, downstreamEnded: Bool),
        cut: RelayCut,
        census: RelayCensus,
        onEnd: @escaping @Sendable () -> Void
    ) {
        self.cut = cut
        self.census = census
        census.count.add(1, ordering: .relaxed)
        self.downstream = downstream
        self.upstream = upstream
        self.pump = RelayPump(downstream: downstream, upstream: upstream, flow: flow)
        self.flow = flow
        self.logger = logger
        self.earlyFromDownstream = early.fromDownstream
        self.earlyFromUpstream = early.fromUpstream
        self.downstreamEnded = early.downstreamEnded
        self.onEnd = onEnd
    }

    deinit {
        census.count.subtract(1, ordering: .relaxed)
    }

    func socket(_ side: RelayPump<RelaySocket>.Side) -> RelaySocket {
        side == .downstream ? downstream : upstream
    }

    /// Writes what the set-up read, then starts moving bytes.
    func begin(scratch: UnsafeMutableRawBufferPointer) -> RelayPump<RelaySocket>.Outcome {
        defer {
            earlyFromDownstream = ByteBuffer()
            earlyFromUpstream = ByteBuffer()
        }
        for (bytes, side) in [
            (earlyFromUpstream, RelayPump<RelaySocket>.Side.upstream), (earlyFromDownstream, .downstream),
        ] {
            let outcome = bytes.withUnsafeReadableBytes { pump.forward($0, readFrom: side) }
            if outcome != .open { return outcome }
        }
        return pump.start(downstreamEnded: downstreamEnded, scratch: scratch)
    }

    /// Whether another thread asked to cut the relay.
    var cutRequested: Bool { cut.isRequested }

    /// The loop closed both sockets.
    func ended() {
        // The cut refers to the relay (and the relay to its cut) until here.
        cut.release()
        onEnd()
    }
}

/// How many direct relays exist in memory, ended or not: a relay that ended but was
/// never freed (a reference cycle) shows here, for the proxy's tests.
final class RelayCensus: Sendable {
    let count = Atomic<Int>(0)
}

/// How other threads (a revoking policy, the drain deadline) end a direct relay. It is
/// handed to the bookkeeping before the relay exists, so a cut can come at any point of
/// the hand-off: before the relay is attached (the loop then ends it as it arrives),
/// before the loop has it (likewise), or while it runs.
final class RelayCut: Sendable {
    private let state = NIOLockedValueBox<(requested: Bool, relay: DirectRelay?, loop: DirectRelayLoop?)>(
        (false, nil, nil)
    )

    var isRequested: Bool { state.withLockedValue { $0.requested } }

    func attach(_ relay: DirectRelay, to loop: DirectRelayLoop) {
        state.withLockedValue { $0 = ($0.requested, relay, loop) }
    }

    /// The relay ended: nothing is left to cut.
    func release() {
        state.withLockedValue { $0 = (true, nil, nil) }
    }

    func request() {
        let (relay, loop) = state.withLockedValue { state in
            state.requested = true
            defer { state = (true, nil, nil) }
            return (state.relay, state.loop)
        }
        if let relay, let loop { loop.cut(relay) }
    }
}

/// The proxy's direct relay loops, one per worker thread, taking relays in turn.
///
/// An opaque relay (no HTTP gate between its sides) starts on the connection's event
/// loop like any other, and moves here once its preface exchange is done: each channel's
/// socket is duplicated, the TLS session is detached from its handler, and both channels
/// are closed, which releases their own descriptors but not the connections. From then
/// on the relay costs a read and a send per direction per message, with no channel
/// bookkeeping, no pipeline and no reference counting on the path.
final class DirectRelays: Sendable {
    private let loops: [DirectRelayLoop]
    private let next = Atomic<Int>(0)
    private let census = RelayCensus()

    init(count: Int, idleTimeout: TimeAmount, logger: Logger) throws {
        loops = try (0..<count).map {
            try DirectRelayLoop(name: "beemesh-relay-\($0)", idleTimeout: idleTimeout, logger: logger)
        }
    }

    /// Relays running now.
    var count: Int { loops.reduce(0) { $0 + $1.active.load(ordering: .relaxed) } }

    /// Relays in memory (running, or ended and not yet freed).
    var inMemory: Int { census.count.load(ordering: .relaxed) }

    /// Relays taken over since start.
    var adopted: Int { adoptions.load(ordering: .relaxed) }
    private let adoptions = Atomic<Int>(0)

    /// Stops every loop and waits (up to `limit`) until their threads have ended the
    /// relays they had, so that their peers get close_notify and their flows are
    /// recorded before the process exits.
    func stop(waitingUpTo limit: Duration = .seconds(2)) async {
        for loop in loops { loop.stop() }
        let deadline = ContinuousClock.now + limit
        while loops.contains(where: { !$0.hasExited }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Moves the relay between `context`'s channel (downstream) and `upstream` to a
    /// loop. Returns false, changing nothing, when the connection is not at a point
    /// where it can move (bytes still queued in a channel, a TLS session with bytes in
    /// flight or already closing); the caller then relays through the channels.
    func adopt(
        downstream context: ChannelHandlerContext,
        upstream: any Channel,
        environment: ProxyEnvironment,
        flow: Flow?,
        logger: Logger,
        early: (fromDownstream: ByteBuffer, fromUpstream: ByteBuffer, downstreamEnded: Bool)
    ) -> Bool {
        let downstream = context.channel
        let loop = loops[next.wrappingAdd(1, ordering: .relaxed).oldValue % loops.count]
        guard loop.isAccepting, let downTLS = Self.detachableTLS(downstream),
            let upTLS = Self.detachableTLS(upstream), let downFD = Self.duplicateSocket(downstream)
        else { return false }
        guard let upFD = Self.duplicateSocket(upstream) else {
            close(downFD)
            return false
        }
        // From here the relay, not the channel, is the live connection: a revoking
        // policy or the drain deadline cuts it, and its end finishes the flow. A flow
        // a policy change is revoking right now stays with its channel, which that
        // revocation is closing.
        let cut = RelayCut()
        let key = HandedOverConnection()
        guard environment.liveFlows.handOver(downstream, to: key, cut: cut.request) else {
            close(downFD)
            close(upFD)
            return false
        }
        environment.tracker.handOver(downstream, to: key, cut: cut.request)
        flow?.handOver()

        let downSocket = RelaySocket(
            fd: downFD,
            tls: downTLS.map { $0.handler.detach(socket: downFD, context: $0.context)! }
        )
        let upSocket = RelaySocket(fd: upFD, tls: upTLS.map { $0.handler.detach(socket: upFD, context: $0.context)! })
        let tracker = environment.tracker
        let liveFlows = environment.liveFlows
        let relay = DirectRelay(
            downstream: downSocket,
            upstream: upSocket,
            flow: flow,
            logger: logger,
            early: early,
            cut: cut,
            census: census
        ) {
            flow?.finish()
            tracker.release(key)
            liveFlows.release(key)
        }
        cut.attach(relay, to: loop)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        downstream.close(promise: nil)
        upstream.close(promise: nil)
        environment.metrics.relay(direct: true)
        adoptions.add(1, ordering: .relaxed)
        if !loop.adopt(relay) {
            // The proxy is stopping: end the connection here.
            relay.pump.closeAll(.cut)
            relay.ended()
        }
        return true
    }

    /// `.some(nil)` for a channel without TLS, `.some(handler)` for one whose TLS session
    /// can be detached now, nil when it cannot (or anything is queued in the channel).
    private static func detachableTLS(
        _ channel: any Channel
    ) -> (handler: MeshTLSHandler, context: ChannelHandlerContext)?? {
        guard channel.isActive,
            let buffered = try? channel.syncOptions?.getOption(.bufferedWritableBytes), buffered == 0
        else { return nil }
        guard let context = try? channel.pipeline.syncOperations.context(handlerType: MeshTLSHandler.self) else {
            return .some(nil)
        }
        let handler = context.handler as! MeshTLSHandler
        guard handler.isDetachable else { return nil }
        return .some((handler, context))
    }

    /// A descriptor of our own for the channel's socket (close-on-exec).
    private static func duplicateSocket(_ channel: any Channel) -> CInt? {
        let fd = try? channel.pipeline.syncOperations.withUnsafeTransportIfAvailable(of: NIOBSDSocket.Handle.self) {
            fcntl($0, F_DUPFD_CLOEXEC, 0)
        }
        guard let fd, fd >= 0 else { return nil }
        return fd
    }
}
