import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The workload API in a StatefulSet's pod (`workloadAPI.listen`, 127.0.0.1:15020):
/// each connection from the app is relayed, bytes as they are, to the agent's socket
/// made for this pod alone (`workloadAPI.socket`). The agent serves and authorizes
/// there: the socket is the pod's credential, so the app needs none, and it reaches
/// its own StatefulSet's group only. No flow is recorded (it is not mesh traffic);
/// at most `maximumConnections` are open at once.
enum WorkloadAPIRelay {
    static let maximumConnections = 64

    static func bootstrap(
        group: any EventLoopGroup,
        socket: String,
        environment: ProxyEnvironment,
        logger: Logger
    ) -> ServerBootstrap {
        let open = NIOLockedValueBox(0)
        return ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let admitted = open.withLockedValue { count in
                    guard count < maximumConnections else { return false }
                    count += 1
                    return true
                }
                guard admitted else {
                    channel.close(promise: nil)
                    return channel.eventLoop.makeSucceededVoidFuture()
                }
                channel.closeFuture.whenComplete { _ in open.withLockedValue { $0 -= 1 } }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        WorkloadAPIConnector(socket: socket, idleTimeout: environment.idleTimeout, logger: logger)
                    )
                }
            }
    }
}

/// Connects an accepted connection to the agent's socket, then joins the two with a
/// relay pair (back-pressure and half-close as every relay of the sidecar).
private final class WorkloadAPIConnector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let socket: String
    private let idleTimeout: TimeAmount
    private let logger: Logger

    init(socket: String, idleTimeout: TimeAmount, logger: Logger) {
        self.socket = socket
        self.idleTimeout = idleTimeout
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        ClientBootstrap(group: context.eventLoop)
            .channelOption(.autoRead, value: false)
            .channelOption(.allowRemoteHalfClosure, value: true)
            .connect(unixDomainSocketPath: socket)
            .whenComplete { result in
                let (handler, context) = bound.value
                switch result {
                case .success(let upstream):
                    handler.join(context, upstream)
                case .failure(let error):
                    handler.logger.warning(
                        "the agent's workload socket does not answer",
                        metadata: ["socket": "\(handler.socket)", "error": "\(error)"]
                    )
                    context.close(promise: nil)
                }
            }
    }

    private func join(_ context: ChannelHandlerContext, _ upstream: any Channel) {
        guard context.channel.isActive else {
            upstream.close(promise: nil)
            return
        }
        let (downstreamSide, upstreamSide) = RelayHandler.pair(idleTimeout: idleTimeout, logger: logger)
        do {
            try upstream.pipeline.syncOperations.addHandler(upstreamSide)
            try context.pipeline.syncOperations.addHandler(downstreamSide)
        } catch {
            upstream.close(promise: nil)
            context.close(promise: nil)
            return
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        context.channel.read()
        upstream.read()
    }
}
