#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// A pod as the node agent runs it (`GET /v1/pods`, `beectl get pods`).
public struct PodStatus: Codable, Sendable, Equatable {
    public var name: String
    public var namespace: String
    /// `Pending`, `Running`, `CrashLoopBackOff`, `Failed`, `Terminating`.
    public var phase: String
    /// `Kind/namespace/name` of the object that asked for it.
    public var owner: String
    /// The pod's address on the node's container network.
    public var ip: String?
    public var node: String
    public var identity: String?
    /// Whether the sidecar was injected (`beemesh.io/inject: "false"` opts out).
    public var injected: Bool
    public var created: Date
    public var containers: [ContainerStatus]
    /// Why the pod is not running as asked, when it is not.
    public var message: String?

    public struct ContainerStatus: Codable, Sendable, Equatable {
        public var name: String
        public var image: String
        /// `running`, `exited`, `created`, `missing`.
        public var state: String
        public var restarts: Int
        public var exitCode: Int?
        public var sidecar: Bool

        public init(name: String, image: String, state: String, restarts: Int, exitCode: Int?, sidecar: Bool) {
            self.name = name
            self.image = image
            self.state = state
            self.restarts = restarts
            self.exitCode = exitCode
            self.sidecar = sidecar
        }
    }

    public init(
        name: String,
        namespace: String,
        phase: String,
        owner: String,
        ip: String?,
        node: String,
        identity: String?,
        injected: Bool,
        created: Date,
        containers: [ContainerStatus],
        message: String?
    ) {
        self.name = name
        self.namespace = namespace
        self.phase = phase
        self.owner = owner
        self.ip = ip
        self.node = node
        self.identity = identity
        self.injected = injected
        self.created = created
        self.containers = containers
        self.message = message
    }

    /// `ready/total` containers.
    public var ready: String {
        "\(containers.filter { $0.state == "running" }.count)/\(containers.count)"
    }

    public var restarts: Int { containers.reduce(0) { $0 + $1.restarts } }
}

/// A Deployment or StatefulSet (`GET /v1/deployments`, `beectl get deployments`).
public struct DeploymentStatus: Codable, Sendable, Equatable {
    public var kind: String
    public var name: String
    public var namespace: String
    public var replicas: Int
    public var ready: Int
    public var created: Date

    public init(kind: String, name: String, namespace: String, replicas: Int, ready: Int, created: Date) {
        self.kind = kind
        self.name = name
        self.namespace = namespace
        self.replicas = replicas
        self.ready = ready
        self.created = created
    }
}

/// The answer to `POST /v1/apply` and `POST /v1/delete`: one line per object, as
/// kubectl prints them (`deployment/orders created`).
public struct ApplyResult: Codable, Sendable, Equatable {
    public var objects: [String]

    public init(objects: [String]) { self.objects = objects }
}
