import CLinux
import Dispatch
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// The agent API's listeners, each of which knows who calls through it:
///
/// | listener | the caller is |
/// |---|---|
/// | the control socket (`api.socket`, mode 0660, group `api.socketGroup`) | the connecting process's uid and groups (`SO_PEERCRED`), authorized by `api.access` |
/// | a pod's socket (`<pod dir>/agent/agent.sock`, 0600, the sidecar's uid, mounted into that pod's sidecar alone) | that pod: it may publish its own record and look records up |
/// | `api.listen` (TCP) | nobody: only `/live` and `/ready` answer |
enum APIListeners {
    static func bootstrap(
        group: any EventLoopGroup,
        api: AgentAPI,
        caller: @escaping @Sendable (any Channel) -> EventLoopFuture<APICaller?>
    ) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                caller(channel).flatMapThrowing { caller in
                    guard let caller else {
                        api.counters.apiRefused("no_credentials")
                        throw ChannelError.inputClosed
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AgentAPIHandler(api: api, caller: caller))
                }
            }
    }

    /// The credentials the kernel recorded when the peer connected; nil when the
    /// channel is not a socket that has them.
    /// The user database is read off the event loop (it may ask sssd or LDAP).
    static func peerCredentials(of channel: any Channel) -> EventLoopFuture<LocalUser?> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeSucceededFuture(nil)
        }
        let credentials: EventLoopFuture<beemesh_peer_credentials> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET),
            name: SocketOptionName(beemesh_so_peercred)
        )
        return credentials.flatMap { credentials in
            let promise = channel.eventLoop.makePromise(of: LocalUser?.self)
            DispatchQueue.global().async {
                promise.succeed(LocalUser.resolve(uid: credentials.uid, gid: credentials.gid))
            }
            return promise.futureResult
        }.recover { _ in nil }
    }

    /// The control socket: every caller is a local user.
    static func control(group: any EventLoopGroup, api: AgentAPI) -> ServerBootstrap {
        bootstrap(group: group, api: api) { channel in peerCredentials(of: channel).map { $0.map(APICaller.local) } }
    }

    /// The TCP listener: every caller is unauthenticated.
    static func network(group: any EventLoopGroup, api: AgentAPI) -> ServerBootstrap {
        bootstrap(group: group, api: api) { channel in channel.eventLoop.makeSucceededFuture(.network) }
    }
}
