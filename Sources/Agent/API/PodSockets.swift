import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import RaftHost

#if canImport(Glibc)
    import Glibc
#endif

/// One unix socket per injected pod, mounted into that pod's sidecar alone: the agent
/// knows which pod calls from the socket it called through, so a sidecar can publish
/// its own pod's record and nothing else. The kernel's credentials of the caller are
/// checked too: only the sidecar's uid (or root) is served.
final class PodSockets: Sendable {
    private struct Open {
        let channel: any Channel
        let binding: NIOLockedValueBox<PodBinding>
        let path: String
        /// A StatefulSet pod's workload socket (`workload.sock` beside the agent socket).
        var workload: (channel: any Channel, path: String)?
    }

    private let group: any EventLoopGroup
    private let sidecarUser: UInt32
    private let logger: Logger
    private let api = NIOLockedValueBox<AgentAPI?>(nil)
    private let sockets = NIOLockedValueBox<[String: Open]>([:])
    /// The groups the workload sockets serve (nil: no workload sockets).
    private let raftGroups: RaftGroups?

    init(group: any EventLoopGroup, sidecarUser: UInt32, raftGroups: RaftGroups? = nil, logger: Logger) {
        self.group = group
        self.sidecarUser = sidecarUser
        self.raftGroups = raftGroups
        self.logger = logger
    }

    /// The API the sockets answer with; sockets opened before it is set refuse.
    func serve(_ api: AgentAPI) {
        self.api.withLockedValue { $0 = api }
    }

    /// The pods that have a socket, by their keys (podman's pod names).
    var pods: Set<String> { sockets.withLockedValue { Set($0.keys) } }

    /// Opens the socket of the pod `key` at `path` (0600, owned by the sidecar's uid),
    /// or updates what an open one allows. Blocks until bound: call it off the event
    /// loop.
    func open(_ binding: PodBinding, at path: String, key: String) throws {
        if let open = sockets.withLockedValue({ $0[key] }) {
            open.binding.withLockedValue { $0 = binding }
            return
        }
        guard let api = api.withLockedValue({ $0 }) else {
            throw PodmanError(status: nil, message: "the agent API is not serving yet")
        }
        let box = NIOLockedValueBox(binding)
        let sidecarUser = self.sidecarUser
        let logger = self.logger
        unlink(path)
        let channel = try APIListeners.bootstrap(group: group, api: api) { channel in
            APIListeners.peerCredentials(of: channel).map { user in
                guard let user, user.uid == sidecarUser || user.uid == 0 else {
                    let binding = box.withLockedValue { $0 }
                    logger.warning(
                        "refused a caller on a pod's agent socket",
                        metadata: ["pod": "\(binding.pod)", "caller": "\(user.map(\.description) ?? "unknown")"]
                    )
                    return nil
                }
                return .pod(box.withLockedValue { $0 })
            }
        }.bind(unixDomainSocketPath: path).wait()
        guard chown(path, sidecarUser, sidecarUser) == 0, chmod(path, 0o600) == 0 else {
            let reason = String(cString: strerror(errno))
            try? channel.close().wait()
            throw PodmanError(status: nil, message: "cannot give \(path) to uid \(sidecarUser) (0600): \(reason)")
        }
        var open = Open(channel: channel, binding: box, path: path)
        if let workload = binding.workload, let raftGroups {
            let workloadPath = (path as NSString).deletingLastPathComponent + "/workload.sock"
            do {
                open.workload = (try openWorkload(workload, at: workloadPath, groups: raftGroups), workloadPath)
            } catch {
                try? channel.close().wait()
                unlink(path)
                throw error
            }
        }
        sockets.withLockedValue { $0[key] = open }
    }

    /// The socket the sidecar relays the workload API from (127.0.0.1:15020 in the
    /// pod): only the sidecar's uid (or root) is served, and only that pod's group.
    private func openWorkload(
        _ binding: WorkloadAPIHandler.Binding,
        at path: String,
        groups: RaftGroups
    ) throws -> any Channel {
        unlink(path)
        let (sidecarUser, logger) = (self.sidecarUser, self.logger)
        let channel = try ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                APIListeners.peerCredentials(of: channel).flatMapThrowing { user in
                    guard let user, user.uid == sidecarUser || user.uid == 0 else {
                        logger.warning(
                            "refused a caller on a pod's workload socket",
                            metadata: [
                                "group": "\(binding.group)", "caller": "\(user.map(\.description) ?? "unknown")",
                            ]
                        )
                        throw ChannelError.inputClosed
                    }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(
                        WorkloadAPIHandler(lookup: { groups.host($0) }, binding: binding, logger: logger)
                    )
                }
            }
            .bind(unixDomainSocketPath: path).wait()
        guard chown(path, sidecarUser, sidecarUser) == 0, chmod(path, 0o600) == 0 else {
            let reason = String(cString: strerror(errno))
            try? channel.close().wait()
            throw PodmanError(status: nil, message: "cannot give \(path) to uid \(sidecarUser) (0600): \(reason)")
        }
        return channel
    }

    /// Closes the socket of the pod `key`, if it has one.
    func close(key: String) {
        guard let open = sockets.withLockedValue({ $0.removeValue(forKey: key) }) else { return }
        try? open.channel.close().wait()
        unlink(open.path)
        if let workload = open.workload {
            try? workload.channel.close().wait()
            unlink(workload.path)
        }
    }

    func closeAll() {
        for key in pods { close(key: key) }
    }
}
