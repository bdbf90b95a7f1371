import Logging
import MeshIdentity
import MeshNet

/// The sidecar's configuration: `beemesh-proxy run --config FILE` (YAML).
///
/// Every field, its default and meaning is listed in docs/configuration.md ("Proxy configuration");
/// keep the two in step. Values are validated once, at load, with errors naming the
/// file, line and field.
public struct ProxyConfiguration: Sendable, Equatable, Encodable {
    /// Where the workload's X.509-SVID, key and trust bundle live (replaced atomically by
    /// the agent; re-read when they change).
    public struct Identity: Sendable, Equatable, Encodable {
        public var certificate: String
        public var privateKey: String
        public var trustBundle: String
        /// How often the three files are checked for changes. Default 1 s.
        public var reloadInterval: Double = 1

        public init(certificate: String, privateKey: String, trustBundle: String) {
            self.certificate = certificate
            self.privateKey = privateKey
            self.trustBundle = trustBundle
        }
    }

    /// The mTLS listener other sidecars connect to.
    public struct Inbound: Sendable, Equatable, Encodable {
        /// Default `0.0.0.0:15008`.
        public var listen = HostPort(host: "0.0.0.0", port: 15008)
        /// Service names (`name.namespace`) this workload answers for; empty: any.
        public var services: [String] = []
        /// App ports a preface may name. Empty (the default) admits none: the mesh
        /// fails closed, and loopback-only services stay out of reach. The proxy's own
        /// listening ports are never admitted, even if listed.
        public var ports: [UInt16] = []
        /// Where the app listens. Default `127.0.0.1`.
        public var appAddress = "127.0.0.1"
        /// Connections that have not finished their TLS handshake, at most, in all.
        /// More are closed as soon as they are accepted. Default 1024.
        public var maxUnauthenticated = 1024
        /// The same, from one source address. Default 128.
        public var maxUnauthenticatedPerSource = 128
    }

    /// A static outbound route: connections are carried over mTLS to one of the
    /// endpoints, asking for `service` and `port`. They come from a local plaintext
    /// listener (`listen`), from the capture listener when the app's original
    /// destination matches one of `match`, or both.
    public struct Route: Sendable, Equatable, Encodable {
        public var listen: HostPort?
        public var match: [RouteMatch] = []
        public var service: String
        public var port: UInt16
        public var endpoints: [Endpoint]

        public init(listen: HostPort?, match: [RouteMatch] = [], service: String, port: UInt16, endpoints: [Endpoint]) {
            self.listen = listen
            self.match = match
            self.service = service
            self.port = port
            self.endpoints = endpoints
        }
    }

    /// Destinations a captured connection may have dialled to reach a route: an
    /// address or network, and a port (nil: any).
    public struct RouteMatch: Sendable, Equatable {
        public var network: IPNetwork
        public var port: UInt16?

        public init(network: IPNetwork, port: UInt16?) {
            self.network = network
            self.port = port
        }
    }

    /// The listeners nftables redirects to (`beemesh-proxy capture install`). Empty
    /// lists (the default) open none: a proxy used only through `routes`.
    public struct CaptureListeners: Sendable, Equatable, Encodable {
        /// Outbound capture, conventionally `127.0.0.1:15001` and `[::1]:15001` (a
        /// redirect in the output hook always lands on loopback).
        public var outbound: [HostPort] = []
        /// Inbound plaintext capture, conventionally `0.0.0.0:15006` and `[::]:15006`:
        /// peers that did not come through a sidecar.
        /// Each one is admitted only where a policy allows unauthenticated peers.
        public var inbound: [HostPort] = []

        public init(outbound: [HostPort] = [], inbound: [HostPort] = []) {
            self.outbound = outbound
            self.inbound = inbound
        }
    }

    /// One sidecar serving a route's service, and the identity it must prove.
    public struct Endpoint: Sendable, Equatable {
        public var address: HostPort
        public var identity: SpiffeID

        public init(address: HostPort, identity: SpiffeID) {
            self.address = address
            self.identity = identity
        }
    }

    public struct Timeouts: Sendable, Equatable, Encodable {
        /// TCP connect, to an endpoint or to the app. Default 5 s.
        public var connect: Double = 5
        /// While an endpoint has not answered (connect, handshake and preface) for
        /// this long, the next endpoint of the service is dialled as well; the first
        /// to answer carries the connection (Happy Eyeballs between endpoints).
        /// Default 250 ms.
        public var nextEndpoint: Double = 0.25
        /// An endpoint that failed an attempt, or was still silent when a later one
        /// answered, is tried after the others for this long, doubling with each
        /// failure in a row up to 60 s (passive outlier ejection). Default 1 s.
        public var ejection: Double = 1
        /// The whole TLS handshake. Default 10 s.
        public var handshake: Double = 10
        /// An inbound mTLS connection that sends nothing this long after it is
        /// accepted is closed. Default 2 s.
        public var firstByte: Double = 2
        /// From handshake to a complete preface (and to its answer). Default 5 s.
        public var preface: Double = 5
        /// A relayed connection with no bytes either way is closed. Default 1 h.
        public var idle: Double = 3600
        /// On SIGTERM, how long live connections may finish before they are cut. Default 30 s.
        public var drain: Double = 30
    }

    public var identity: Identity
    public var inbound = Inbound()
    public var routes: [Route] = []
    public var capture = CaptureListeners()

    /// The workload this sidecar serves, as policies select it.
    public struct ServedWorkload: Sendable, Equatable, Encodable {
        /// Default: the namespace of the sidecar's own SPIFFE ID (`…/ns/<namespace>/…`).
        public var namespace: String?
        public var labels: [String: String] = [:]

        public init(namespace: String? = nil, labels: [String: String] = [:]) {
            self.namespace = namespace
            self.labels = labels
        }
    }

    /// Where policies come from. Every inbound connection is decided by them: with no
    /// policy that allows it, a connection is denied.
    public struct Policies: Sendable, Equatable, Encodable {
        /// Every `*.yaml`, `*.yml`, `*.json` in it; watched, changes apply within a second.
        public var directory = "/etc/beemesh/policies"
        /// App ports whose requests are decided one by one as HTTP/1.1, in addition to
        /// those that a policy's HTTP rules name.
        public var httpPorts: [UInt16] = []
    }

    /// The admin API (`GET /flows`, `/ready`, `/live`, `/config`, `/identity`,
    /// `/policies`, `/metrics`): HTTP/1.1 and JSON, for `beectl` and curl.
    public struct Admin: Sendable, Equatable, Encodable {
        /// Default `127.0.0.1:15000`; nil (`off`): none.
        public var listen: HostPort? = HostPort(host: "127.0.0.1", port: 15000)
        /// Default `/var/run/beemesh/proxy.sock` (mode 0660; the directory is created);
        /// nil (`off`): none.
        public var socket: String? = "/var/run/beemesh/proxy.sock"
    }

    /// The Prometheus scrape endpoint (`GET /metrics`).
    public struct MetricsEndpoint: Sendable, Equatable, Encodable {
        /// Default `127.0.0.1:15090`; nil (`off`): none.
        public var listen: HostPort? = HostPort(host: "127.0.0.1", port: 15090)
    }

    /// The flow table behind `GET /flows` and `beectl flows`.
    public struct Flows: Sendable, Equatable, Encodable {
        /// Finished flows kept (a ring buffer: the oldest is evicted, and counted).
        /// Default 4096 (about 2 MB with HTTP detail).
        public var capacity = 4096
        /// Off: no flow table and no per-connection metrics (what the benchmark's
        /// baseline measures). Default on.
        public var record = true
        /// Keep each HTTP request's query in its flow record. Default off: the path
        /// only, since queries often carry session tokens, and flows are read by more
        /// people than the app's own logs.
        public var recordQuery = false
    }

    /// Service discovery through the node agent's DHT node (`beemesh-agent`).
    public struct Discovery: Sendable, Equatable, Encodable {
        /// The agent's API: a unix socket path or `http://host:port`. Nil (`off`, the
        /// default): no DHT; only static `routes`.
        public var agent: String?
        /// This workload's service record, signed with its key and stored in the DHT
        /// through the agent; nil: the sidecar publishes nothing (a client only).
        public var publish: Publish?
        /// How long a lookup's answer is reused. Default 5 s; never beyond a record's expiry.
        public var cacheTTL: Double = 5
    }

    public struct Publish: Sendable, Equatable, Encodable {
        /// `name.namespace`; the workload's identity must be allowed to serve it (same
        /// namespace, service account named like the service).
        public var service: String
        /// The address other sidecars dial for this workload's mTLS listener. Default
        /// `inbound.listen` (which must then not be a wildcard address).
        public var endpoint: HostPort?
        /// App ports offered; default `inbound.ports`.
        public var ports: [UInt16] = []
        /// Relative share of new connections. Default 100.
        public var weight: UInt16 = 100
        /// How long a record is believed; it is republished every third of that.
        /// Default 30 s: an endpoint that stops is forgotten within it.
        public var ttl: Double = 30

        public init(service: String) {
            self.service = service
        }
    }

    /// Mesh DNS: `<service>.<namespace>.<suffix>` answered with a virtual IP, every other
    /// name forwarded to the upstream resolvers.
    public struct DNS: Sendable, Equatable, Encodable {
        /// UDP and TCP listeners. Default `127.0.0.1:15053` when `discovery.agent` is set,
        /// none otherwise (mesh names need the DHT); `off`: none.
        public var listen: [HostPort]?
        /// Default `mesh`.
        public var suffix = "mesh"
        /// Resolvers for other names; default the `nameserver` lines of `resolvConf`.
        public var upstreams: [HostPort] = []
        /// Default `/etc/resolv.conf`.
        public var resolvConf = "/etc/resolv.conf"
        /// TTL of mesh answers. Default 5 s.
        public var ttl: UInt32 = 5
    }

    /// The workload API of a StatefulSet's pod (`/v1/kv`, `/v1/leader`): the agent
    /// serves it on a socket made for the pod alone, and the sidecar relays it to the
    /// app on loopback. The agent sets both for a StatefulSet's pods.
    public struct WorkloadAPI: Sendable, Equatable, Encodable {
        /// Where the app reaches it; nil (`off`, the default): nowhere. The agent sets
        /// `127.0.0.1:15020`.
        public var listen: HostPort?
        /// The agent's socket for this pod's workload API.
        public var socket: String?
    }

    public var discovery = Discovery()
    public var dns = DNS()
    public var workloadAPI = WorkloadAPI()

    /// Where mesh DNS listens: `dns.listen`, or by default `127.0.0.1:15053` when there
    /// is an agent to resolve through.
    public var dnsListeners: [HostPort] {
        dns.listen ?? (discovery.agent != nil ? [HostPort(host: "127.0.0.1", port: 15053)] : [])
    }
    public var workload = ServedWorkload()
    public var policies = Policies()
    public var admin = Admin()
    public var metrics = MetricsEndpoint()
    public var flows = Flows()
    public var timeouts = Timeouts()
    /// Event-loop threads. Default 1 (a sidecar shares its pod's CPU with the app).
    public var workers = 1
    /// How opaque relays (no HTTP policy gate) move bytes once established: `direct`
    /// (default) hands their sockets to a relay thread per worker; `channel` keeps them
    /// in the SwiftNIO pipeline like gated relays.
    public var relayEngine = RelayEngine.direct
    public var logLevel: Logger.Level = .info

    public init(identity: Identity) {
        self.identity = identity
    }
}

/// Which relay carries established opaque connections (`relayEngine`).
public enum RelayEngine: String, Sendable, CaseIterable, Encodable {
    case direct
    case channel
}
