import Foundation
import Logging
import MeshConfiguration
import MeshNet
import Policy

/// The node agent's configuration: `beemesh-agent run --config FILE` (YAML).
///
/// Every field, its default and meaning is listed in docs/configuration.md ("Agent configuration");
/// keep the two in step. Validated once, at load, with errors naming file, line and field.
public struct AgentConfiguration: Sendable, Equatable {
    /// This machine in the mesh.
    public struct Node: Sendable, Equatable {
        /// The node's name: its DHT identity is `spiffe://<trust-domain>/node/<name>`.
        public var name: String
        /// The node CA directory written by `beectl ca intermediate` (`ca.pem`, `ca.key`,
        /// `bundle.pem`): the agent issues its own node certificate from it at start.
        public var ca: String
        /// Where the node key is kept (0600), so that the node ID (the SHA-256 of its
        /// public key) survives restarts. Default `/var/lib/beemesh`.
        public var stateDirectory = "/var/lib/beemesh"
    }

    /// The DHT server: mutual TLS between node identities, on a TCP port.
    public struct DHT: Sendable, Equatable {
        /// Default `0.0.0.0:15010`.
        public var listen = HostPort(host: "0.0.0.0", port: 15010)
        /// The address other nodes dial; default `listen` (which then must not be a
        /// wildcard address).
        public var advertise: HostPort?
        /// Other agents to join through (`host:port` of their DHT listener). Empty: this
        /// node starts a DHT of its own, which others join.
        public var bootstrap: [HostPort] = []
        /// One request's answer is awaited this long. Default 2 s.
        public var requestTimeout: Double = 2
        /// Expired records dropped, buckets refreshed, own records republished. Default 60 s.
        public var maintenanceInterval: Double = 60

        /// The address this node tells others.
        public var advertised: HostPort { advertise ?? listen }
    }

    /// The agent's local API (JSON over HTTP/1.1) for `beectl`. Sidecars do not use it:
    /// each gets a socket of its own.
    public struct API: Sendable, Equatable {
        /// The control socket, mode 0660, owner root. Default
        /// `/var/run/beemesh/agent/agent.sock`; nil (`off`): none.
        public var socket: String? = "/var/run/beemesh/agent/agent.sock"
        /// The socket's group (a name or number): its members may connect, and are then
        /// served what `access` grants them. Default 0 (root's group).
        public var socketGroup: UInt32 = 0
        /// Who may do what through the socket, besides root (who may do everything).
        public var access = APIAccess()
        /// A TCP listener besides the socket: it authenticates nobody, so it answers
        /// only `/live` and `/ready`. Default nil (`off`).
        public var listen: HostPort?
    }

    /// Running workloads as podman pods with the injected sidecar. Nil (no `pods`
    /// section): the agent is a DHT server only.
    public struct Pods: Sendable, Equatable {
        /// podman's API socket; the agent starts `podman system service` on it when
        /// nothing answers. Default `/run/podman/podman.sock`.
        public var podmanSocket = "/run/podman/podman.sock"
        /// The sidecar image, built locally by `deploy/build-images`. Default
        /// `localhost/beemesh-proxy:latest`.
        public var sidecarImage = "localhost/beemesh-proxy:latest"
        /// `beemesh-proxy` on the host, run to install each pod's capture rules. Default:
        /// next to `beemesh-agent`.
        public var proxyBinary: String?
        /// Per-pod configuration, identity and admin socket. Default `/run/beemesh/pods`
        /// (tmpfs: private keys never reach a disk).
        public var runDirectory = "/run/beemesh/pods"
        /// Mounted read-only into every sidecar. Default `/etc/beemesh/policies`.
        public var policies = "/etc/beemesh/policies"
        /// Workload certificates live this long and are renewed at half-life. Default 24 h.
        public var certificateTTL: Double = 86_400
        /// The address other nodes dial this node's pods at. Default: the host of
        /// `dht.advertise`.
        public var advertise: String?
        /// The host ports pods' mTLS listeners are published on, one per pod (on
        /// `advertise`), so that other nodes reach them with no route to the pod network.
        /// Default 30000-32767; nil (`off`), or an advertised loopback address: pods
        /// publish their pod address, reachable on this node only.
        public var hostPorts: ClosedRange<UInt16>? = 30000...32767

        /// Where other nodes dial this node's pods: `advertise` (else `dhtHost`) and the
        /// host port range; nil when pods publish their pod address instead (no range,
        /// or a loopback address, which no other node can dial).
        public func published(dhtHost: String) -> (host: String, ports: ClosedRange<UInt16>)? {
            let host = advertise ?? dhtHost
            guard let hostPorts, !host.hasPrefix("127."), host != "::1", host != "localhost" else { return nil }
            return (host, hostPorts)
        }

        /// An IPv4 or IPv6 address, not a network or a name.
        static func isAddress(_ text: String) -> Bool {
            !text.contains("/") && (try? IPNetwork(parsing: text)) != nil
        }
    }

    /// The Raft groups of the StatefulSets this node runs (one per StatefulSet, in
    /// `<stateDirectory>/raft`).
    public struct Raft: Sendable, Equatable {
        /// Raft messages between agents (mutual TLS between node identities). Default
        /// nil (`off`): a StatefulSet's ordinals run on one node until placement spreads
        /// them, so its group has one member and nothing to send.
        public var listen: HostPort?
        /// The leader's heartbeat. Default 100 ms.
        public var heartbeat: Double = 0.1
        /// A follower that hears no leader this long (randomized up to twice as long)
        /// campaigns. Default 1 s; at least 5 heartbeats.
        public var electionTimeout: Double = 1
        /// A snapshot is taken, and the log cut, after this many entries. Default 10000.
        public var snapshotEvery = 10_000
    }

    public var node: Node
    public var dht = DHT()
    public var raft = Raft()
    public var api = API()
    public var pods: Pods?
    public var logLevel: Logger.Level = .info

    public init(node: Node) {
        self.node = node
    }
}

extension AgentConfiguration {
    public static func load(path: String) throws(ConfigurationError) -> AgentConfiguration {
        try parse(yaml: try YAMLField.read(path), file: path)
    }

    public static func parse(yaml: String, file: String) throws(ConfigurationError) -> AgentConfiguration {
        let reader = try YAMLField.singleDocument(yaml, file: file)
        let top = try reader.mapping(allowed: ["node", "dht", "api", "pods", "raft", "logLevel"])

        let nodeMap = try top.required("node").mapping(allowed: ["name", "ca", "stateDirectory"])
        let nameNode = try nodeMap.required("name")
        let name = try nameNode.string()
        guard !name.isEmpty, name.utf8.count <= 63,
            name.utf8.allSatisfy({ $0 == UInt8(ascii: "-") || (0x30...0x39).contains($0) || (0x61...0x7a).contains($0) }
            )
        else {
            throw nameNode.error("'\(name)' is not a node name (lower-case letters, digits and '-', at most 63)")
        }
        var configuration = AgentConfiguration(node: Node(name: name, ca: try nodeMap.required("ca").string()))
        if let node = nodeMap.optional("stateDirectory") { configuration.node.stateDirectory = try node.string() }

        if let dhtNode = top.optional("dht") {
            let map = try dhtNode.mapping(allowed: [
                "listen", "advertise", "bootstrap", "requestTimeout", "maintenanceInterval",
            ])
            if let node = map.optional("listen") { configuration.dht.listen = try node.hostPort() }
            if let node = map.optional("advertise") { configuration.dht.advertise = try node.hostPort() }
            if let node = map.optional("bootstrap") {
                configuration.dht.bootstrap = try node.sequence().map { item throws(ConfigurationError) in
                    try item.hostPort()
                }
            }
            if let node = map.optional("requestTimeout") {
                configuration.dht.requestTimeout = try node.duration(positive: true)
            }
            if let node = map.optional("maintenanceInterval") {
                configuration.dht.maintenanceInterval = try node.duration(positive: true)
            }
            let advertised = configuration.dht.advertised
            if advertised.host == "0.0.0.0" || advertised.host == "::" || advertised.port == 0 {
                throw (map.optional("advertise") ?? map.optional("listen") ?? dhtNode)
                    .error("other nodes cannot dial \(advertised): set dht.advertise to a reachable host:port")
            }
        } else {
            throw top.owner.error("dht.advertise is needed: other nodes cannot dial 0.0.0.0:15010")
        }

        if let apiNode = top.optional("api") {
            let map = try apiNode.mapping(allowed: ["socket", "socketGroup", "access", "listen"])
            if let node = map.optional("socket") { configuration.api.socket = try node.socketPath() }
            if let node = map.optional("socketGroup") { configuration.api.socketGroup = try node.groupID() }
            if let node = map.optional("access") {
                configuration.api.access.grants = try node.sequence().map { item throws(ConfigurationError) in
                    try item.grant()
                }
            }
            if let node = map.optional("listen") { configuration.api.listen = try node.optionalHostPort() }
        }
        if let podsNode = top.optional("pods") {
            var pods = Pods()
            if podsNode.isMapping {
                let map = try podsNode.mapping(allowed: [
                    "podmanSocket", "sidecarImage", "proxyBinary", "runDirectory", "policies", "certificateTTL",
                    "advertise", "hostPorts",
                ])
                if let node = map.optional("podmanSocket") { pods.podmanSocket = try node.string() }
                if let node = map.optional("sidecarImage") { pods.sidecarImage = try node.string() }
                if let node = map.optional("proxyBinary") { pods.proxyBinary = try node.string() }
                if let node = map.optional("runDirectory") { pods.runDirectory = try node.string() }
                if let node = map.optional("policies") { pods.policies = try node.string() }
                if let node = map.optional("certificateTTL") {
                    pods.certificateTTL = try node.duration(positive: true)
                    guard pods.certificateTTL >= 60 else { throw node.error("at least 1m") }
                }
                if let node = map.optional("advertise") {
                    let host = try node.string()
                    guard Pods.isAddress(host), host != "0.0.0.0", host != "::" else {
                        throw node.error("'\(host)' is not an address (an IP) other nodes can dial")
                    }
                    pods.advertise = host
                }
                if let node = map.optional("hostPorts") { pods.hostPorts = try node.portRange() }
                if pods.advertise == nil, pods.published(dhtHost: configuration.dht.advertised.host) != nil,
                    !Pods.isAddress(configuration.dht.advertised.host)
                {
                    throw (map.optional("hostPorts") ?? podsNode).error(
                        "host ports are published on an address: set pods.advertise (dht.advertise names a host, "
                            + "\(configuration.dht.advertised.host)), or hostPorts: off"
                    )
                }
            }
            configuration.pods = pods
        }
        if let raftNode = top.optional("raft") {
            let map = try raftNode.mapping(allowed: ["listen", "heartbeat", "electionTimeout", "snapshotEvery"])
            if let node = map.optional("listen") { configuration.raft.listen = try node.optionalHostPort() }
            if let node = map.optional("heartbeat") { configuration.raft.heartbeat = try node.duration(positive: true) }
            if let node = map.optional("electionTimeout") {
                configuration.raft.electionTimeout = try node.duration(positive: true)
            }
            if configuration.raft.electionTimeout < 5 * configuration.raft.heartbeat {
                throw (map.optional("electionTimeout") ?? map.optional("heartbeat") ?? raftNode)
                    .error("electionTimeout must be at least 5 heartbeats, or a lost heartbeat starts an election")
            }
            if let node = map.optional("snapshotEvery") {
                let entries = try node.integer()
                guard (100...10_000_000).contains(entries) else { throw node.error("between 100 and 10000000") }
                configuration.raft.snapshotEvery = entries
            }
        }
        if let node = top.optional("logLevel") { configuration.logLevel = try node.logLevel() }
        return configuration
    }
}

extension YAMLField {
    /// `{user: NAME|UID, admin: true}`, `{group: NAME|GID, namespaces: [...],
    /// serviceAccounts: [...]}`: one `api.access` grant.
    fileprivate func grant() throws(ConfigurationError) -> APIAccess.Grant {
        let map = try mapping(allowed: ["user", "group", "admin", "publish", "namespaces", "serviceAccounts"])
        let subject: APIAccess.Grant.Subject
        switch (map.optional("user"), map.optional("group")) {
        case (let user?, nil): subject = .user(try user.userID())
        case (nil, let group?): subject = .group(try group.groupID())
        default: throw error("name exactly one of user and group")
        }
        var grant = APIAccess.Grant(subject: subject)
        if let node = map.optional("admin") { grant.admin = try node.bool() }
        if let node = map.optional("publish") { grant.publish = try node.bool() }
        for (key, names) in [("namespaces", \APIAccess.Grant.namespaces), ("serviceAccounts", \.serviceAccounts)] {
            guard let node = map.optional(key) else { continue }
            let values = try node.strings()
            for value in values where value != "*" {
                try KubernetesObject.checkName(value, field: node, limit: 63)
            }
            grant[keyPath: names] = values
        }
        guard grant.admin || grant.publish || (!grant.namespaces.isEmpty && !grant.serviceAccounts.isEmpty) else {
            throw error(
                "a grant without admin: true or publish: true names its namespaces and serviceAccounts (\"*\": all)"
            )
        }
        return grant
    }

    /// `FIRST-LAST` (a range of TCP ports), or `off`.
    fileprivate func portRange() throws(ConfigurationError) -> ClosedRange<UInt16>? {
        let text = try string()
        if text == "off" { return nil }
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let first = UInt16(parts[0]), let last = UInt16(parts[1]), first > 0, first <= last
        else { throw error("'\(text)' is not a port range such as 30000-32767 (or off)") }
        return first...last
    }

    /// A user name from the user database, or a uid.
    fileprivate func userID() throws(ConfigurationError) -> UInt32 {
        let text = try string()
        if let number = UInt32(text) { return number }
        guard let entry = getpwnam(text) else { throw error("no user '\(text)' on this machine") }
        return entry.pointee.pw_uid
    }

    /// A group name from the group database, or a gid.
    fileprivate func groupID() throws(ConfigurationError) -> UInt32 {
        let text = try string()
        if let number = UInt32(text) { return number }
        guard let entry = getgrnam(text) else { throw error("no group '\(text)' on this machine") }
        return entry.pointee.gr_gid
    }
}
