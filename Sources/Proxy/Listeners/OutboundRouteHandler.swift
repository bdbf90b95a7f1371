import Logging
import MeshConfiguration
import MeshIdentity
import MeshTLS
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// Chooses endpoints of a route in turn. Shared by every connection of the route.
final class EndpointRotation: Sendable {
    let endpoints: [ProxyConfiguration.Endpoint]
    private let next = NIOLockedValueBox(0)

    init(_ endpoints: [ProxyConfiguration.Endpoint]) {
        self.endpoints = endpoints
    }

    /// Every endpoint once, starting at the next one in turn.
    func attemptOrder() -> [ProxyConfiguration.Endpoint] {
        let start = next.withLockedValue { value in
            defer { value = (value + 1) % endpoints.count }
            return value
        }
        return (0..<endpoints.count).map { endpoints[(start + $0) % endpoints.count] }
    }
}

/// The client half of the mTLS hop, on an accepted plaintext connection of a route:
/// connects to an endpoint's sidecar with mTLS (insisting on the endpoint's identity),
/// sends the preface, waits for the answer, then relays. The endpoints race
/// (`EndpointRace`): the next is dialled when one fails or stays silent for
/// `timeouts.nextEndpoint`, and the first to answer carries the connection; endpoints
/// that failed lately go last (`EndpointHealth`). A denial ends the connection.
final class OutboundRouteHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let route: ProxyConfiguration.Route
    private let rotation: EndpointRotation
    private let environment: ProxyEnvironment
    private let flow: Flow?
    private var logger: Logger
    /// Why the last endpoint tried could not be used.
    private var lastFailure: String?
    private var candidates: [ProxyConfiguration.Endpoint] = []
    private var race = EndpointRace(candidates: 0, stagger: 0)
    /// Each dialled attempt's connection once it exists; a cancelled attempt whose
    /// connection arrives later is closed then.
    private var upstreams: [Int: any Channel] = [:]
    private var cancelled: Set<Int> = []
    private var timer: Scheduled<Void>?

    init(route: ProxyConfiguration.Route, rotation: EndpointRotation, environment: ProxyEnvironment, flow: Flow?) {
        self.route = route
        self.rotation = rotation
        self.environment = environment
        self.flow = flow
        self.logger = environment.logger
        logger[metadataKey: "service"] = "\(route.service)"
        logger[metadataKey: "port"] = "\(route.port)"
    }

    /// Bytes the client sent before the relay existed: sent upstream first.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        early.writeBuffer(&bytes)
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        let (identity, route) = (environment.identity, route)
        flow?.update { flow in
            flow.source.identity = identity ?? "unauthenticated"
            flow.destination.service = route.service
            flow.destination.port = route.port
        }
        let now = NIODeadline.now().uptimeNanoseconds
        candidates = environment.endpointHealth.order(rotation.attemptOrder(), now: now)
        race = EndpointRace(
            candidates: candidates.count,
            stagger: UInt64(environment.configuration.timeouts.nextEndpoint * 1e9)
        )
        carry(race.start(now: now), context: context)
        if candidates.isEmpty { carry([.exhausted], context: context) }
    }

    /// The client went away while the endpoints were still racing: every attempt ends.
    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        for index in 0..<race.dialled { cancel(index) }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // A client that half-closes before the relay exists: remember by re-firing once
        // the relay is installed (the socket reports it only once).
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputEnded = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private var inputEnded = false
    private var early = ByteBuffer()

    private func carry(_ directives: [EndpointRace.Directive], context: ChannelHandlerContext) {
        for directive in directives {
            switch directive {
            case .dial(let index):
                dial(index, context: context)
            case .wake(let at):
                timer?.cancel()
                let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
                timer = context.eventLoop.scheduleTask(deadline: .uptimeNanoseconds(at)) {
                    let (handler, context) = bound.value
                    handler.carry(handler.race.timer(now: NIODeadline.now().uptimeNanoseconds), context: context)
                }
            case .cancel(let index):
                cancel(index)
            case .eject(let index):
                eject(index, now: NIODeadline.now().uptimeNanoseconds)
            case .use:
                break  // `answered` carries the flow on that attempt's connection
            case .exhausted:
                timer?.cancel()
                logger.warning("no endpoint reachable; closing the client connection")
                environment.metrics.outbound("no_endpoint")
                flow?.failed(lastFailure.map { "no_endpoint (\($0))" } ?? "no_endpoint")
                context.close(promise: nil)
            }
        }
    }

    /// Ends attempt `index`, also while it is still connecting or in its handshake
    /// (which then counts as no rejection: we left).
    private func cancel(_ index: Int) {
        cancelled.insert(index)
        guard let upstream = upstreams.removeValue(forKey: index) else { return }
        upstream.pipeline.fireUserInboundEventTriggered(TLSHandshakeAbandoned())
        upstream.close(promise: nil)
    }

    private func recordDestination(_ endpoint: ProxyConfiguration.Endpoint) {
        flow?.update { flow in
            flow.destination.address = endpoint.address.description
            flow.destination.identity = endpoint.identity.description
        }
    }

    /// Moves `candidates[index]` to the back of the line for a while.
    private func eject(_ index: Int, now: UInt64) {
        let firstEjection = UInt64(environment.configuration.timeouts.ejection * 1e9)
        if environment.endpointHealth.failed(
            candidates[index].address.description,
            now: now,
            firstEjection: firstEjection
        ) {
            environment.metrics.endpointEjected()
        }
    }

    /// Attempt `index` could not be used: the endpoint goes last for a while, and the
    /// race goes on.
    private func failed(_ index: Int, reason: String, context: ChannelHandlerContext) {
        upstreams.removeValue(forKey: index)?.close(promise: nil)
        lastFailure = reason
        let endpoint = candidates[index]
        recordDestination(endpoint)
        let now = NIODeadline.now().uptimeNanoseconds
        eject(index, now: now)
        carry(race.failed(index, now: now), context: context)
    }

    private func dial(_ index: Int, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }  // the client left while an attempt failed
        let endpoint = candidates[index]
        let tlsContext = environment.credentials.current
        let request: PrefaceRequest
        do {
            request = try PrefaceRequest(service: route.service, port: route.port)
        } catch {
            // Validated at configuration load; cannot happen for a loaded route.
            preconditionFailure("route \(route.service) passed validation but is not a valid preface: \(error)")
        }
        let environment = self.environment
        let logger = self.logger
        let responsePromise = context.eventLoop.makePromise(of: PrefaceClientHandler.Outcome.self)
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        environment.relayClientBootstrap(on: context.eventLoop)
            .channelInitializer { channel in
                // Known from the start, so that a cancel closes it even while it connects.
                let handler = bound.value.handler
                if handler.cancelled.contains(index) { return channel.close() }
                handler.upstreams[index] = channel
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers(
                        MeshTLSHandler(
                            context: tlsContext,
                            expectedPeer: endpoint.identity,
                            handshakeTimeout: environment.handshakeTimeout,
                            logger: logger
                        ),
                        PrefaceClientHandler(
                            request: request,
                            timeout: environment.prefaceTimeout,
                            outcome: responsePromise
                        )
                    )
                }
            }
            .connect(literalOrName: endpoint.address.host, port: endpoint.address.port)
            .whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .failure(let error):
                    responsePromise.fail(error)
                    guard !handler.cancelled.contains(index) else { return }
                    handler.logger.warning(
                        "endpoint unreachable",
                        metadata: ["endpoint": "\(endpoint.address)", "error": "\(error)"]
                    )
                    handler.failed(index, reason: "unreachable", context: context)
                case .success(let upstream):
                    guard !handler.cancelled.contains(index), context.channel.isActive else {
                        upstream.close(promise: nil)
                        return
                    }
                    responsePromise.futureResult.whenComplete { outcome in
                        let (handler, context) = bound.value
                        handler.answered(index, outcome, upstream: upstream, endpoint: endpoint, context: context)
                    }
                }
            }
    }

    /// Attempt `index` finished its handshake and preface (or failed on the way).
    private func answered(
        _ index: Int,
        _ outcome: Result<PrefaceClientHandler.Outcome, any Error>,
        upstream: any Channel,
        endpoint: ProxyConfiguration.Endpoint,
        context: ChannelHandlerContext
    ) {
        guard !cancelled.contains(index) else {
            upstream.close(promise: nil)
            return
        }
        if case .failure(let error as TLSHandshakeError) = outcome {
            logger.warning(
                "mTLS to endpoint failed",
                metadata: [
                    "endpoint": "\(endpoint.address)", "reason": "\(error.reason.label)",
                    "detail": "\(error.detail)",
                ]
            )
            failed(index, reason: error.reason.label, context: context)
            return
        }
        if case .failure(let error as PrefaceClientHandler.BeforeHandshake) = outcome {
            logger.warning(
                "endpoint connection failed before the handshake ended",
                metadata: ["endpoint": "\(endpoint.address)", "error": "\(error.underlying)"]
            )
            failed(index, reason: "unreachable", context: context)
            return
        }
        environment.endpointHealth.answered(endpoint.address.description)
        let directives = race.answered(index)
        guard directives.first == .use(index) else {
            carry(directives, context: context)
            return
        }
        upstreams[index] = nil
        timer?.cancel()
        carry(Array(directives.dropFirst()), context: context)
        recordDestination(endpoint)
        if let handshake = answeredHandshake(outcome) {
            flow?.handshakeCompleted(version: handshake.protocolVersion, cipher: handshake.cipher, peer: nil)
        }
        finish(outcome, upstream: upstream, endpoint: endpoint, context: context)
    }

    private func answeredHandshake(_ outcome: Result<PrefaceClientHandler.Outcome, any Error>) -> TLSHandshakeCompleted?
    {
        switch outcome {
        case .success(.accepted(_, let handshake)), .success(.denied(_, let handshake)): handshake
        case .failure: nil
        }
    }

    private func finish(
        _ outcome: Result<PrefaceClientHandler.Outcome, any Error>,
        upstream: any Channel,
        endpoint: ProxyConfiguration.Endpoint,
        context: ChannelHandlerContext
    ) {
        switch outcome {
        case .failure(let error):
            logger.warning(
                "endpoint refused the connection",
                metadata: ["endpoint": "\(endpoint.address)", "error": "\(error)"]
            )
            environment.metrics.outbound("error")
            flow?.failed((error as? PrefaceError)?.code.rawValue ?? "preface_failed")
            upstream.close(promise: nil)
            context.close(promise: nil)
        case .success(.denied(let reason, _)):
            logger.warning(
                "denied by the endpoint",
                metadata: ["endpoint": "\(endpoint.address)", "reason": "\(reason.label)"]
            )
            environment.metrics.outbound(reason.label)
            if reason == .upstreamUnavailable {
                flow?.failed(reason.label)
            } else {
                flow?.decided(.denied, reason: reason.label)
            }
            upstream.close(promise: nil)
            context.close(promise: nil)
        case .success(.accepted(let leftover, _)):
            guard context.channel.isActive else {
                upstream.close(promise: nil)
                return
            }
            environment.metrics.outbound("ok")
            flow?.decided(.allowed)
            RelayHandler.join(
                context,
                to: upstream,
                environment: environment,
                flow: flow,
                logger: logger,
                readFromDownstream: early,
                readFromUpstream: leftover,
                downstreamInputEnded: inputEnded
            )
            early = ByteBuffer()
        }
    }
}

/// Sends the preface once the handshake completed and reads the one-status answer.
/// Bytes that arrive behind the answer (a server that speaks first) are handed over.
final class PrefaceClientHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Outcome {
        case accepted(leftover: ByteBuffer, handshake: TLSHandshakeCompleted)
        case denied(PrefaceResponse.Reason, handshake: TLSHandshakeCompleted)
    }

    /// The connection failed before its handshake ended, other than by a refused
    /// handshake (a reset, a close): the endpoint did not answer.
    struct BeforeHandshake: Error {
        let underlying: any Error
    }

    private let request: PrefaceRequest
    private let timeout: TimeAmount
    private var handshake: TLSHandshakeCompleted?
    private var outcome: EventLoopPromise<Outcome>?
    private var buffered = ByteBuffer()
    private var timer: Scheduled<Void>?

    init(request: PrefaceRequest, timeout: TimeAmount, outcome: EventLoopPromise<Outcome>) {
        self.request = request
        self.timeout = timeout
        self.outcome = outcome
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let completed = event as? TLSHandshakeCompleted {
            handshake = completed
            var buffer = context.channel.allocator.buffer(capacity: 64)
            request.encode(into: &buffer)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
            timer = context.eventLoop.scheduleTask(in: timeout) {
                let (handler, context) = bound.value
                handler.complete(.failure(PrefaceError(.timeout, "no preface answer in time")), context: context)
            }
            context.read()
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed {
            complete(
                .failure(PrefaceError(.truncated, "endpoint closed before answering the preface")),
                context: context
            )
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffered.writeBuffer(&bytes)
        guard outcome != nil else { return }
        do {
            guard let body = try MeshPreface.decodeFrame(&buffered) else { return }
            let response = try PrefaceResponse(body: body)
            guard let handshake else { throw PrefaceError(.truncated, "an answer before the handshake ended") }
            switch response.status {
            case .ok:
                complete(.success(.accepted(leftover: buffered, handshake: handshake)), context: context)
            case .denied:
                complete(.success(.denied(response.reason, handshake: handshake)), context: context)
            }
        } catch {
            complete(.failure(error), context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if outcome != nil { context.read() }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        complete(.failure(error), context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        complete(.failure(ChannelError.ioOnClosedChannel), context: context)
        context.fireChannelInactive()
    }

    private func complete(_ result: Result<Outcome, any Error>, context: ChannelHandlerContext) {
        guard let outcome else { return }
        self.outcome = nil
        var result = result
        if handshake == nil, case .failure(let error) = result, !(error is TLSHandshakeError) {
            result = .failure(BeforeHandshake(underlying: error))
        }
        timer?.cancel()
        if case .success(.accepted) = result {
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        outcome.completeWith(result)
    }
}

@available(*, unavailable)
extension OutboundRouteHandler: Sendable {}

@available(*, unavailable)
extension PrefaceClientHandler: Sendable {}
