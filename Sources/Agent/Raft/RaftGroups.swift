import Foundation
import Logging
import MeshAPI
import NIOCore
import NIOPosix
import Raft
import RaftHost
import RaftPersistence

/// The Raft groups of the StatefulSets this node runs: one group per StatefulSet
/// (`namespace/name`), in `<state>/raft/<namespace>/<name>`, on an event loop of its
/// own (a group's fdatasync must not hold up the DHT or the API).
///
/// The reconciler keeps them in step with the desired state at each pass:
/// - `ensure` opens the group of every StatefulSet this node runs and removes, with
///   its data, the group of one that was deleted; it claims the ordinals this node is
///   to run, and says which of them it may start (those it holds: an ordinal never
///   runs on two nodes at once);
/// - `report` tells each group which of this node's ordinals are ready, and releases
///   the claims of those whose pods are gone (not merely no longer desired). The group's leader elects the workload's leader among
///   the ready ones (`RaftGroupHost`).
///
/// A group's members are the agents that run its ordinals: this agent alone until
/// placement runs a StatefulSet's ordinals on several nodes.
final class RaftGroups: @unchecked Sendable {
    private let loopGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let loop: any EventLoop
    let transport: RaftTransport
    private let configuration: AgentConfiguration.Raft
    private let directory: String
    private let node: String
    private let logger: Logger
    /// By `namespace/name` (the loop's).
    private var hosts: [String: RaftGroupHost] = [:]

    init(configuration: AgentConfiguration, identity: NodeIdentity, logger: Logger) throws {
        loop = loopGroup.next()
        transport = try RaftTransport(loop: loop, credentials: identity.credentials, logger: logger)
        self.configuration = configuration.raft
        directory = configuration.node.stateDirectory + "/raft"
        node = configuration.node.name
        self.logger = logger
    }

    func start() async throws {
        guard let listen = configuration.listen else { return }
        let channel = try await loop.flatSubmit { self.transport.listen(on: listen) }.get()
        logger.info("Raft listening", metadata: ["listen": "\(channel.localAddress?.description ?? "?")"])
    }

    func stop() async {
        try? await loop.flatSubmit {
            for host in self.hosts.values { host.stop() }
            return self.transport.close()
        }.get()
        try? await loopGroup.shutdownGracefully()
    }

    /// The group of StatefulSet `namespace/name`, if this node hosts it.
    func host(_ group: String) -> EventLoopFuture<RaftGroupHost?> {
        loop.submit { self.hosts[group] }
    }

    var statuses: EventLoopFuture<[RaftGroupStatus]> {
        loop.submit { self.hosts.keys.sorted().map { self.hosts[$0]!.status(node: self.node) } }
    }

    // MARK: from the reconciler (its thread; each call waits for the loop)

    /// Who holds an ordinal, as this node's group knows it.
    enum Holder: Equatable {
        /// This node: it may run the ordinal's pod.
        case here
        /// Another node: this one must not run it.
        case elsewhere(String)
        /// Not known (the group is not open, or the claim was not decided yet): a pod
        /// that runs may go on, none is started.
        case unknown
    }

    /// Opens the groups of `statefulSets` (`namespace/name` → replicas this node is to
    /// run), removes the others' with their data (unless `removing` is false: the
    /// desired state is not known whole), and claims each group's ordinals. Returns
    /// who holds each ordinal asked for, by group.
    func ensure(_ statefulSets: [String: Int], removing: Bool = true) -> [String: [Int: Holder]] {
        let opened = (try? loop.submit { self.open(statefulSets, removing: removing) }.wait()) ?? [:]
        var holders: [String: [Int: Holder]] = [:]
        for (group, replicas) in statefulSets {
            var view = [Int: Holder](uniqueKeysWithValues: (0..<replicas).map { ($0, Holder.unknown) })
            defer { holders[group] = view }
            guard let host = opened[group], let claims = try? loop.submit({ host.state.claims }).wait() else {
                continue
            }
            for ordinal in 0..<replicas {
                if let claim = claims[ordinal] {
                    view[ordinal] = claim.node == node ? .here : .elsewhere(claim.node)
                    continue
                }
                let outcome = try? loop.flatSubmit { host.write(.claim(ordinal: ordinal, node: self.node)) }.wait()
                switch outcome {
                case .done?: view[ordinal] = .here
                case .conflict?:
                    let holder: String?? = try? loop.submit { host.state.claims[ordinal]?.node }.wait()
                    if case .some(.some(let other)) = holder {
                        view[ordinal] = other == node ? .here : .elsewhere(other)
                    }
                case nil: break
                }
            }
        }
        return holders
    }

    /// Which of this node's ordinals are ready, by group; claims of ordinals this node
    /// no longer runs (scaled down, or gone) are released.
    func report(ready: [String: [Int: Bool]]) {
        for (group, ordinals) in ready {
            guard let host = try? loop.submit({ self.hosts[group] }).wait() else { continue }
            let claims = (try? loop.submit { host.state.claims }.wait()) ?? [:]
            var commands: [WorkloadState.Command] = []
            for (ordinal, claim) in claims where claim.node == node {
                if let isReady = ordinals[ordinal] {
                    if claim.ready != isReady { commands.append(.ready(ordinal: ordinal, node: node, ready: isReady)) }
                } else {
                    commands.append(.release(ordinal: ordinal, node: node))
                }
            }
            for command in commands {
                let outcome = try? loop.flatSubmit { host.write(command) }.wait()
                logger.info(
                    "StatefulSet ordinal reported",
                    metadata: ["group": "\(group)", "change": "\(command)", "applied": "\(outcome != nil)"]
                )
            }
        }
    }

    // MARK: the loop's

    private func open(_ statefulSets: [String: Int], removing: Bool) -> [String: RaftGroupHost] {
        for (group, host) in hosts where removing && statefulSets[group] == nil {
            host.stop()
            transport.unregister(group)
            hosts[group] = nil
            do {
                try RaftGroupStore.remove(directory: path(of: group))
                logger.info("Raft group removed with its data", metadata: ["group": "\(group)"])
            } catch {
                logger.error("cannot remove a Raft group's data", metadata: ["group": "\(group)", "error": "\(error)"])
            }
        }
        for group in statefulSets.keys where hosts[group] == nil {
            var settings = RaftGroupHost.Settings(id: transport.localID)
            settings.raft.heartbeatInterval = UInt64(configuration.heartbeat * 1e9)
            settings.raft.electionTimeoutMin = UInt64(configuration.electionTimeout * 1e9)
            settings.raft.electionTimeoutMax = 2 * settings.raft.electionTimeoutMin
            settings.snapshotEvery = UInt64(configuration.snapshotEvery)
            do {
                let host = try RaftGroupHost(
                    group: group,
                    directory: path(of: group),
                    settings: settings,
                    bootstrap: Membership(voters: [transport.localID]),
                    sink: transport,
                    loop: loop,
                    logger: logger
                )
                transport.register(host)
                host.start()
                hosts[group] = host
                logger.info("Raft group open", metadata: ["group": "\(group)", "directory": "\(path(of: group))"])
            } catch {
                logger.error("cannot open a Raft group", metadata: ["group": "\(group)", "error": "\(error)"])
            }
        }
        return hosts
    }

    private func path(of group: String) -> String { directory + "/" + group }
}
