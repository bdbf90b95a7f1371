#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// The node agent's DHT as its local API shows it (`GET /dht/peers`, `beectl dht peers`).
public struct DHTPeers: Codable, Sendable, Equatable {
    /// This node: its ID (hex SHA-256 of its public key) and advertised address.
    public var node: String
    public var address: String
    public var identity: String
    /// The routing table's contacts, closest (longest shared prefix) first.
    public var peers: [Peer]
    /// Records this node holds for others.
    public var records: Int

    public struct Peer: Codable, Sendable, Equatable {
        public var id: String
        public var address: String
        /// The k-bucket: the number of leading bits the peer's ID shares with ours.
        public var bucket: Int

        public init(id: String, address: String, bucket: Int) {
            self.id = id
            self.address = address
            self.bucket = bucket
        }
    }

    public init(node: String, address: String, identity: String, peers: [Peer], records: Int) {
        self.node = node
        self.address = address
        self.identity = identity
        self.peers = peers
        self.records = records
    }
}

/// The endpoints of one service found in the DHT (`GET /dht/services/NAME.NAMESPACE`,
/// `beectl dht lookup`). Every record was checked by the agent; a sidecar checks each
/// `record` again against its own trust bundle before it believes it.
public struct ServiceLookup: Codable, Sendable, Equatable {
    /// `name.namespace`.
    public var service: String
    public var endpoints: [Endpoint]
    /// Nodes asked on the way, and requests sent.
    public var hops: Int
    public var messages: Int

    public struct Endpoint: Codable, Sendable, Equatable {
        /// `host:port` of the endpoint sidecar's mTLS listener.
        public var endpoint: String
        public var ports: [UInt16]
        public var identity: String
        public var weight: UInt16
        public var sequence: UInt64
        public var expires: Date
        /// The signed record as stored in the DHT (base64), for the caller to verify.
        public var record: String

        public init(
            endpoint: String,
            ports: [UInt16],
            identity: String,
            weight: UInt16,
            sequence: UInt64,
            expires: Date,
            record: String
        ) {
            self.endpoint = endpoint
            self.ports = ports
            self.identity = identity
            self.weight = weight
            self.sequence = sequence
            self.expires = expires
            self.record = record
        }
    }

    public init(service: String, endpoints: [Endpoint], hops: Int, messages: Int) {
        self.service = service
        self.endpoints = endpoints
        self.hops = hops
        self.messages = messages
    }
}

/// `PUT /dht/records`: a signed service record (base64 of its DHT value) to store.
public struct PublishRequest: Codable, Sendable, Equatable {
    public var record: String

    public init(record: String) { self.record = record }
}

/// The answer to a publish: the DHT key and how many of the nodes closest to it
/// accepted the record.
public struct PublishResult: Codable, Sendable, Equatable {
    public var key: String
    public var replicas: Int

    public init(key: String, replicas: Int) {
        self.key = key
        self.replicas = replicas
    }
}
