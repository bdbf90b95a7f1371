import Logging
import MeshConfiguration
import MeshIdentity
import MeshTLS
import Metrics
import NIOCore
import NIOPosix
import Policy

/// The server half of the mTLS hop, after the handshake: reads the client's preface,
/// checks it against what this workload serves, connects to the app on
/// `appAddress:port`, answers one status, and turns the connection into a relay.
///
/// No plaintext reaches the app before the peer is authenticated and the preface is
/// accepted; a refused preface gets a denial with its reason, then the connection closes.
final class InboundPrefaceHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State {
        case awaitingHandshake
        case readingPreface
        case connecting
        case done
    }

    private let environment: ProxyEnvironment
    private let flow: Flow?
    private var logger: Logger
    private var state = State.awaitingHandshake
    private var buffered = ByteBuffer()
    private var peer: SpiffeID?
    private var timeout: Scheduled<Void>?
    private var inputEndedWhileConnecting = false
    /// The connection-level request the policy admitted (peer and port).
    private var admittedRequest: PolicyRequest?

    init(environment: ProxyEnvironment, flow: Flow?) {
        self.environment = environment
        self.flow = flow
        self.logger = environment.logger
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let completed = event as? TLSHandshakeCompleted {
            peer = completed.peer
            logger[metadataKey: "peer"] = "\(completed.peer)"
            flow?.handshakeCompleted(
                version: completed.protocolVersion,
                cipher: completed.cipher,
                peer: completed.peer.description
            )
            state = .readingPreface
            let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
            timeout = context.eventLoop.scheduleTask(in: environment.prefaceTimeout) {
                let (handler, context) = bound.value
                guard handler.state == .readingPreface else { return }
                handler.reject(PrefaceError(.timeout, "no complete preface in time"), context: context)
            }
            context.read()
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed {
            switch state {
            case .awaitingHandshake, .readingPreface:
                do {
                    try MeshPreface.checkComplete(buffered)
                } catch {
                    reject(error, context: context)
                }
            case .connecting:
                inputEndedWhileConnecting = true
            case .done:
                context.fireUserInboundEventTriggered(event)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        buffered.writeBuffer(&bytes)
        guard state == .readingPreface else { return }
        let body: ByteBuffer?
        do {
            body = try MeshPreface.decodeFrame(&buffered)
        } catch {
            reject(error, context: context)
            return
        }
        guard let body else { return }
        let request: PrefaceRequest
        do {
            request = try PrefaceRequest(body: body)
        } catch {
            reject(error, context: context)
            return
        }
        admit(request, context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if state == .readingPreface { context.read() }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Handshake failures were logged and counted by the TLS handler.
        timeout?.cancel()
        if state == .awaitingHandshake {
            flow?.failed((error as? TLSHandshakeError)?.reason.label ?? "handshake_failed")
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timeout?.cancel()
        state = .done
        context.fireChannelInactive()
    }

    private func admit(_ request: PrefaceRequest, context: ChannelHandlerContext) {
        timeout?.cancel()
        let inbound = environment.configuration.inbound
        logger[metadataKey: "service"] = "\(request.service)"
        logger[metadataKey: "port"] = "\(request.port)"
        let identity = environment.identity
        flow?.update { flow in
            flow.destination.service = request.service
            flow.destination.port = request.port
            flow.destination.address = "\(HostPort(host: inbound.appAddress, port: Int(request.port)))"
            flow.destination.identity = identity
        }
        if !inbound.services.isEmpty, !inbound.services.contains(request.service) {
            deny(.unknownService, context: context)
            return
        }
        guard environment.admitsAppPort(request.port) else {
            deny(.portNotAllowed, context: context)
            return
        }
        let policyRequest = PolicyRequest(peer: peer.flatMap { PeerIdentity($0.description) }, port: request.port)
        let decision = environment.decide(policyRequest, channel: context.channel, flow: flow, logger: logger)
        logger[metadataKey: "policy"] = "\(decision.policyLabel)"
        guard decision.isAllowed else {
            logger.warning("denied by policy", metadata: ["decision": "\(decision)"])
            deny(.policyDenied, context: context)
            return
        }
        admittedRequest = policyRequest
        state = .connecting
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        environment.relayClientBootstrap(on: context.eventLoop)
            .connect(literalOrName: inbound.appAddress, port: Int(request.port))
            .whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let app):
                    handler.startRelay(app: app, context: context)
                case .failure(let error):
                    handler.logger.warning("app connect failed", metadata: ["error": "\(error)"])
                    handler.deny(.upstreamUnavailable, context: context)
                }
            }
    }

    private func startRelay(app: any Channel, context: ChannelHandlerContext) {
        guard context.channel.isActive else {
            app.close(promise: nil)
            return
        }
        state = .done
        var response = context.channel.allocator.buffer(capacity: 8)
        PrefaceResponse.ok.encode(into: &response)
        context.writeAndFlush(wrapOutboundOut(response), promise: nil)
        environment.metrics.inbound("ok")
        logger.debug("inbound relay established")

        RelayHandler.join(
            context,
            to: app,
            environment: environment,
            flow: flow,
            logger: logger,
            gate: admittedRequest.flatMap { environment.httpGate(for: $0, flow: flow, logger: logger) },
            readFromDownstream: buffered,
            // Straight to the relay behind us: the TLS handler in front has already
            // reported this close_notify once.
            downstreamInputEnded: inputEndedWhileConnecting
        )
        buffered = ByteBuffer()
    }

    private func reject(_ error: PrefaceError, context: ChannelHandlerContext) {
        logger.warning("refused preface", metadata: ["reason": "\(error.code.rawValue)", "detail": "\(error.reason)"])
        environment.metrics.prefaceError(error.code)
        deny(.malformedPreface, context: context)
    }

    private func deny(_ reason: PrefaceResponse.Reason, context: ChannelHandlerContext) {
        timeout?.cancel()
        state = .done
        switch reason {
        case .policyDenied: break  // recorded with its decision
        case .malformedPreface, .upstreamUnavailable: flow?.failed(reason.label)
        default: flow?.decided(.denied, reason: reason.label)
        }
        if reason != .malformedPreface {
            logger.warning("denied inbound connection", metadata: ["reason": "\(reason.label)"])
        }
        environment.metrics.inbound(reason.label)
        var response = context.channel.allocator.buffer(capacity: 8)
        PrefaceResponse.denied(reason).encode(into: &response)
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(response)).whenComplete { _ in
            bound.value.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension InboundPrefaceHandler: Sendable {}
