import Kademlia
import Logging
import MeshConfiguration
import MeshNet
import Metrics
import NIOCore
import Policy

/// A connection nftables redirected to the outbound capture listener: recovers the
/// destination the app dialled and hands the connection to the route that matches it
/// (mTLS to the route's endpoints, as if the app had used the route's listener). A
/// destination no route matches is outside the mesh: egress policies decide whether it
/// is passed through in plaintext or refused (the default); both are logged with the
/// destination and the deciding policy.
final class CapturedOutboundHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let routes: CaptureRoutes
    private let environment: ProxyEnvironment
    private let flow: Flow?
    private var logger: Logger

    init(routes: CaptureRoutes, environment: ProxyEnvironment, flow: Flow?) {
        self.routes = routes
        self.environment = environment
        self.flow = flow
        self.logger = environment.logger
    }

    func channelActive(context: ChannelHandlerContext) {
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        OriginalDestination.lookup(context.channel).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success(let destination):
                handler.dispatch(to: destination, context: context)
            case .failure(let error):
                handler.refuse(
                    "no original destination (not a redirected connection)",
                    result: "no_original_destination",
                    metadata: ["error": "\(error)"],
                    context: context
                )
            }
        }
    }

    private func dispatch(to destination: SocketAddress, context: ChannelHandlerContext) {
        logger[metadataKey: "original_dst"] = "\(destination.text)"
        let identity = environment.identity
        flow?.update { flow in
            flow.source.identity = identity ?? "unauthenticated"
            flow.destination.address = destination.text
            flow.destination.port = UInt16(truncatingIfNeeded: destination.port ?? 0)
        }
        let discovery = environment.discovery
        let decision = CaptureDecision.decide(
            destination,
            listener: context.channel.localAddress,
            virtualService: { address in discovery?.service(atVirtual: address) },
            routes: routes,
            egress: environment.policies.egress
        )
        switch decision {
        case .loop:
            refuse("connection to the capture listener itself", result: "loop", context: context)
        case .noAddress:
            refuse("destination without an IP address", result: "error", context: context)
        case .meshService(let service, let port):
            guard let discovery else { preconditionFailure("a virtual IP without discovery") }
            meshService(service, port: port, discovery: discovery, context: context)
        case .route(let entry):
            logger.info(
                "captured outbound connection",
                metadata: ["service": "\(entry.route.service)", "port": "\(entry.route.port)"]
            )
            handOver(
                to: OutboundRouteHandler(
                    route: entry.route,
                    rotation: entry.rotation,
                    environment: environment,
                    flow: flow
                ),
                context: context
            )
        case .passThrough(let egress), .egressDenied(let egress):
            logger[metadataKey: "policy"] = "\(egress.policyLabel)"
            for audit in egress.audits {
                logger.info("audit rule matched", metadata: ["audit": "\(audit)", "decision": "\(egress)"])
            }
            environment.metrics.egressDecision(egress)
            flow?.decided(egress)
            guard case .passThrough = decision else {
                flow?.update { $0.reason = "egress_denied" }
                refuse(
                    "destination is not a mesh service and no egress policy allows it (\(egress))",
                    result: "egress_denied",
                    context: context
                )
                return
            }
            passThrough(to: destination, context: context)
        }
    }

    /// A virtual IP that mesh DNS gave out: the service's endpoints come from the DHT
    /// (through the cache), then the connection goes on as on a configured route.
    private func meshService(
        _ service: String,
        port: UInt16,
        discovery: MeshDiscovery,
        context: ChannelHandlerContext
    ) {
        logger[metadataKey: "service"] = "\(service)"
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        discovery.resolve(service, on: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            guard context.channel.isActive else { return }
            handler.flow?.update { flow in
                flow.destination.service = service
                flow.destination.port = port
            }
            guard let resolution = try? result.get() else {
                handler.refuse("the node agent cannot be asked for \(service)", result: "no_endpoint", context: context)
                return
            }
            guard let rotation = resolution.rotation(for: port) else {
                handler.refuse(
                    "no endpoint of \(service) serves port \(port) (\(resolution.endpoints.count) endpoints known)",
                    result: "no_endpoint",
                    context: context
                )
                return
            }
            handler.logger.info("captured outbound connection to a mesh service", metadata: ["port": "\(port)"])
            // leader.NAME.NAMESPACE reaches the leading pod of NAME, which serves NAME.
            let route = ProxyConfiguration.Route(
                listen: nil,
                service: ServiceRecord.served(byMeshName: service),
                port: port,
                endpoints: rotation.endpoints
            )
            handler.handOver(
                to: OutboundRouteHandler(
                    route: route,
                    rotation: rotation,
                    environment: handler.environment,
                    flow: handler.flow
                ),
                context: context
            )
        }
    }

    /// Puts `next` in this handler's place and lets it start.
    private func handOver(to next: OutboundRouteHandler, context: ChannelHandlerContext) {
        do {
            try context.pipeline.syncOperations.addHandler(next, position: .after(self))
        } catch {
            context.close(promise: nil)
            return
        }
        context.fireChannelActive()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// Allowed egress: a plaintext connection to the original destination. The proxy's
    /// own sockets are exempt from capture, so this does not come back here.
    private func passThrough(to destination: SocketAddress, context: ChannelHandlerContext) {
        logger.info("outbound connection passed through in plaintext (allowed egress)")
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        environment.relayClientBootstrap(on: context.eventLoop).connect(to: destination).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .failure(let error):
                handler.refuse(
                    "destination unreachable",
                    result: "unreachable",
                    metadata: ["error": "\(error)"],
                    context: context
                )
            case .success(let upstream):
                guard context.channel.isActive else {
                    upstream.close(promise: nil)
                    return
                }
                handler.environment.metrics.outbound("passthrough")
                RelayHandler.join(
                    context,
                    to: upstream,
                    environment: handler.environment,
                    flow: handler.flow,
                    logger: handler.logger
                )
            }
        }
    }

    private func refuse(
        _ message: Logger.Message,
        result: String,
        metadata: Logger.Metadata = [:],
        context: ChannelHandlerContext
    ) {
        logger.warning("refused outbound connection: \(message)", metadata: metadata)
        environment.metrics.outbound(result)
        if result != "egress_denied" { flow?.failed(result) }
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension CapturedOutboundHandler: Sendable {}

/// A plaintext connection nftables redirected to the inbound capture listener: a peer
/// that did not come through a sidecar. It reaches the app (at `inbound.appAddress`
/// and the port it dialled) only where a policy allows unauthenticated peers on that
/// port; everywhere else it is logged with the port it wanted and closed, so by
/// default the pod's ports are reachable only over mTLS. The proxy's own listening
/// ports are never admitted.
final class PlaintextInboundHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let environment: ProxyEnvironment
    private let flow: Flow?
    private var logger: Logger
    /// Whether a policy decided the connection (a refusal before that is an error).
    private var decided = false

    init(environment: ProxyEnvironment, flow: Flow?) {
        self.environment = environment
        self.flow = flow
        self.logger = environment.logger
    }

    func channelActive(context: ChannelHandlerContext) {
        let peer = context.channel.remoteAddress.map(\.text) ?? "unknown"
        logger[metadataKey: "peer"] = "\(peer)"
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        OriginalDestination.lookup(context.channel).whenComplete { result in
            let (handler, context) = bound.value
            guard let destination = try? result.get(), let port = destination.port else {
                handler.refuse("no original destination (not a redirected connection)", context: context)
                return
            }
            handler.logger[metadataKey: "original_dst"] = "\(destination.text)"
            let identity = handler.environment.identity
            handler.flow?.update { flow in
                flow.destination.address = destination.text
                flow.destination.port = UInt16(truncatingIfNeeded: port)
                flow.destination.identity = identity
            }
            guard !handler.environment.listenerPorts.contains(port) else {
                handler.refuse("a port of the proxy itself", context: context)
                return
            }
            let decision = handler.environment.decide(
                PolicyRequest(peer: nil, port: UInt16(port)),
                channel: context.channel,
                flow: handler.flow,
                logger: handler.logger
            )
            handler.decided = true
            handler.logger[metadataKey: "policy"] = "\(decision.policyLabel)"
            guard decision.isAllowed else {
                handler.refuse("no policy admits unauthenticated peers here (\(decision))", context: context)
                return
            }
            handler.admit(port: port, context: context)
        }
    }

    private func admit(port: Int, context: ChannelHandlerContext) {
        let bound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        environment.relayClientBootstrap(on: context.eventLoop)
            .connect(literalOrName: environment.configuration.inbound.appAddress, port: port)
            .whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .failure(let error):
                    handler.logger.warning("app connect failed", metadata: ["error": "\(error)"])
                    handler.environment.metrics.inbound("upstream_unavailable")
                    handler.flow?.failed("upstream_unavailable")
                    context.close(promise: nil)
                case .success(let app):
                    guard context.channel.isActive else {
                        app.close(promise: nil)
                        return
                    }
                    handler.logger.info("plaintext inbound connection admitted by policy")
                    handler.environment.metrics.inbound("plaintext")
                    let gate = handler.environment.httpGate(
                        for: PolicyRequest(peer: nil, port: UInt16(port)),
                        flow: handler.flow,
                        logger: handler.logger
                    )
                    RelayHandler.join(
                        context,
                        to: app,
                        environment: handler.environment,
                        flow: handler.flow,
                        logger: handler.logger,
                        gate: gate
                    )
                }
            }
    }

    private func refuse(_ why: String, context: ChannelHandlerContext) {
        logger.warning("refused plaintext inbound connection: \(why)")
        environment.metrics.inbound("plaintext_refused")
        if !decided { flow?.failed("no_original_destination") }
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension PlaintextInboundHandler: Sendable {}
