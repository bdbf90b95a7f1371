import Foundation
import Kademlia
import MeshIdentity
import MeshTLS

/// The agent's own identity in the DHT: a certificate `spiffe://<trust-domain>/node/<name>`
/// issued at start by the node CA, over a key kept in the state directory, so that the
/// node ID (the SHA-256 of the public key) stays the same across restarts.
public struct NodeIdentity: Sendable {
    public let credentials: WorkloadCredentials
    public let nodeCA: CertificateAuthority
    public let id: NodeID
    public let spiffeID: SpiffeID

    /// Node certificates live this long; the agent issues a new one at each start.
    public static let validity: TimeInterval = 7 * 24 * 3600

    public static func load(_ node: AgentConfiguration.Node) throws(IdentityError) -> NodeIdentity {
        let nodeCA = try CertificateAuthority.load(directory: node.ca)
        let keyPath = node.stateDirectory + "/node.key"
        let key: PrivateKey
        if FileManager.default.fileExists(atPath: keyPath) {
            key = try PrivateKey(pem: try PEMFile.read(keyPath))
        } else {
            key = try PrivateKey.generateP256()
            try PEMFile.createDirectory(node.stateDirectory)
            try PEMFile.write(keyPath, key.pemEncoded, mode: 0o600)
        }
        let spiffeID = try SpiffeID("spiffe://\(nodeCA.trustDomain.name)/node/\(node.name)")
        let credentials = try nodeCA.issueWorkload(spiffeID, validity: validity, key: key)
        return NodeIdentity(
            credentials: credentials,
            nodeCA: nodeCA,
            id: NodeID(publicKey: key.publicKeyDER),
            spiffeID: spiffeID
        )
    }
}

extension NodeID {
    /// A node's ID: the SHA-256 of its DER SubjectPublicKeyInfo.
    public init(publicKey der: [UInt8]) {
        self.init(bytes: Digest.sha256(der))!
    }

    /// Whether a SPIFFE ID names a node (`/node/<name>`), the only identities the DHT
    /// listener talks to.
    static func isNodeIdentity(_ id: SpiffeID) -> Bool {
        id.path.hasPrefix("/node/") && id.path.count > "/node/".count
    }
}
