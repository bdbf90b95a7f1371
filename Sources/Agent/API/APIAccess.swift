import Foundation
import RaftHost

/// Who may do what through the agent's control socket: the `api.access` grants of the
/// agent configuration.
///
/// | caller | may |
/// |---|---|
/// | uid 0 | everything |
/// | a grant with `admin: true` | everything |
/// | a grant with `namespaces` and `serviceAccounts` | read pods, deployments, flows and logs of those namespaces; apply and delete objects there whose pods run as one of those accounts (Services: any) |
/// | a grant with `publish: true` | store signed service records (`PUT /dht/records`: sidecars the agent does not run itself; each record is still checked against the trust bundle) |
/// | any grant | the DHT's peers and service lookups (records are public, and signed) |
/// | no grant | `/live` and `/ready` only |
///
/// A grant names a user or a group (by name or number, resolved at load). A caller is
/// in a group when the group is its process's primary group or the group database
/// lists its user as a member, as `sudo` and `polkit` read it.
public struct APIAccess: Sendable, Equatable {
    public struct Grant: Sendable, Equatable {
        public enum Subject: Sendable, Equatable, CustomStringConvertible {
            case user(UInt32)
            case group(UInt32)

            public var description: String {
                switch self {
                case .user(let uid): "uid \(uid)"
                case .group(let gid): "gid \(gid)"
                }
            }
        }

        public var subject: Subject
        public var admin = false
        /// May store signed service records (a sidecar the agent does not run).
        public var publish = false
        /// `*` stands for every namespace.
        public var namespaces: [String] = []
        /// `*` stands for every service account.
        public var serviceAccounts: [String] = []

        public init(
            subject: Subject,
            admin: Bool = false,
            publish: Bool = false,
            namespaces: [String] = [],
            serviceAccounts: [String] = []
        ) {
            self.subject = subject
            self.admin = admin
            self.publish = publish
            self.namespaces = namespaces
            self.serviceAccounts = serviceAccounts
        }

        func applies(to user: LocalUser) -> Bool {
            switch subject {
            case .user(let uid): user.uid == uid
            case .group(let gid): user.groups.contains(gid)
            }
        }
    }

    public var grants: [Grant] = []

    public init(grants: [Grant] = []) {
        self.grants = grants
    }

    /// What `user` may do.
    func permissions(for user: LocalUser) -> Permissions {
        if user.uid == 0 { return Permissions(admin: true, grants: []) }
        let mine = grants.filter { $0.applies(to: user) }
        return Permissions(admin: mine.contains { $0.admin }, grants: mine)
    }
}

/// A process on the node, as the kernel vouches for it (`SO_PEERCRED`), with its
/// groups from the group database.
struct LocalUser: Sendable, Equatable, CustomStringConvertible {
    var uid: UInt32
    var gid: UInt32
    /// The primary group and every group the group database gives the user.
    var groups: Set<UInt32>

    var description: String { "uid \(uid) (gid \(gid))" }

    /// The user's groups: `gid` and its memberships in the group database.
    static func resolve(uid: UInt32, gid: UInt32) -> LocalUser {
        var groups: Set<UInt32> = [gid]
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 4096)
        if getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, let name = result?.pointee.pw_name {
            var count: Int32 = 64
            var list = [gid_t](repeating: 0, count: Int(count))
            if getgrouplist(name, gid, &list, &count) == -1 {
                list = [gid_t](repeating: 0, count: Int(count))
                _ = getgrouplist(name, gid, &list, &count)
            }
            groups.formUnion(list.prefix(Int(max(0, count))))
        }
        return LocalUser(uid: uid, gid: gid, groups: groups)
    }
}

/// The sum of the grants that apply to one caller.
struct Permissions: Sendable {
    var admin: Bool
    var grants: [APIAccess.Grant]

    /// Any grant at all: the caller may read the node's public state (the DHT).
    var isKnown: Bool { admin || !grants.isEmpty }

    /// May store signed service records.
    var mayPublish: Bool { admin || grants.contains { $0.publish } }

    func mayRead(namespace: String) -> Bool {
        admin || grants.contains { $0.namespaces.contains("*") || $0.namespaces.contains(namespace) }
    }

    /// May write objects in `namespace` whose pods run as `serviceAccount` (nil: an
    /// object without pods, a Service).
    func mayWrite(namespace: String, serviceAccount: String?) -> Bool {
        admin
            || grants.contains { grant in
                (grant.namespaces.contains("*") || grant.namespaces.contains(namespace))
                    && (serviceAccount.map { account in
                        grant.serviceAccounts.contains("*") || grant.serviceAccounts.contains(account)
                    } ?? true)
            }
    }
}

/// Who is on the other end of an API connection.
enum APICaller: Sendable, CustomStringConvertible {
    /// A process on the node, over the control socket.
    case local(LocalUser)
    /// A pod's sidecar, over the socket the agent made for that pod alone.
    case pod(PodBinding)
    /// The optional TCP listener: nobody is authenticated there.
    case network

    var description: String {
        switch self {
        case .local(let user): "\(user)"
        case .pod(let binding): "the sidecar of pod \(binding.pod)"
        case .network: "an unauthenticated TCP client"
        }
    }
}

/// What one pod's sidecar may publish through its own agent socket: a record for its
/// own identity, its own service and its own endpoint, nothing else.
struct PodBinding: Sendable, Equatable {
    /// `namespace/name`.
    var pod: String
    var identity: String
    /// `name.namespace` of the service the pod publishes; nil: it publishes none.
    var service: String?
    /// The endpoint its record must name (`nodeAddress:hostPort` for a pod published on
    /// a host port, else `podIP:15008`); nil: not known yet, nothing may be published.
    var endpoint: String?
    /// A StatefulSet's pod: its group and ordinal, which its workload socket serves.
    var workload: WorkloadAPIHandler.Binding?
}
