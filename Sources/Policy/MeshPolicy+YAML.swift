import MeshNet

/// The documents of one policy file, by kind.
public struct PolicyDocuments: Sendable, Equatable {
    public var mesh: [MeshPolicy] = []
    public var egress: [EgressPolicy] = []

    public init(mesh: [MeshPolicy] = [], egress: [EgressPolicy] = []) {
        self.mesh = mesh
        self.egress = egress
    }

    /// Every document of a policy file (`---` separates several; JSON is accepted, as a
    /// YAML subset). One bad document rejects the whole file, with file, line and field.
    public static func parse(_ text: String, file: String) throws(LocatedError) -> PolicyDocuments {
        var documents = PolicyDocuments()
        var names: Set<String> = []
        for document in try YAMLField.documents(text, file: file) {
            let top = try document.mapping(allowed: ["apiVersion", "kind", "metadata", "spec"])
            let version = try top.required("apiVersion")
            guard try version.string() == "beemesh.io/v1" else {
                throw version.error("must be beemesh.io/v1, got '\(try version.string())'")
            }
            let kind = try top.required("kind")
            let reference: String
            switch try kind.string() {
            case "MeshPolicy":
                let policy = try MeshPolicy.parse(top, document: document)
                reference = "MeshPolicy \(policy.reference)"
                documents.mesh.append(policy)
            case "EgressPolicy":
                let policy = try EgressPolicy.parse(top, document: document)
                reference = "EgressPolicy \(policy.reference)"
                documents.egress.append(policy)
            case let other:
                throw kind.error("unknown kind '\(other)' (MeshPolicy or EgressPolicy)")
            }
            guard names.insert(reference).inserted else {
                throw document.error("\(reference) is defined twice in this file")
            }
        }
        return documents
    }

    /// What every policy kind has: metadata (checked first), then its spec's selector
    /// and action, and the document's origin.
    static func header(
        _ top: YAMLMapping,
        document: YAMLField
    ) throws(LocatedError) -> (header: PolicyHeader, spec: YAMLMapping) {
        let (name, namespace) = try metadata(top)
        let spec = try top.required("spec").mapping(allowed: ["selector", "action", "rules"])
        let header = PolicyHeader(
            name: name,
            namespace: namespace,
            selector: try selector(spec),
            action: try action(spec),
            source: PolicySource(file: document.file, line: document.line)
        )
        return (header, spec)
    }

    /// `namespace/name` of a document's metadata, checked.
    static func metadata(_ top: YAMLMapping) throws(LocatedError) -> (name: String, namespace: String) {
        let metadata = try top.required("metadata").mapping(allowed: ["name", "namespace"])
        let name = try metadata.required("name")
        let namespace = try metadata.required("namespace")
        for field in [name, namespace] {
            let text = try field.string()
            guard MeshPolicy.isDNSLabel(text) else {
                throw field.error("'\(text)' must be a DNS label (a-z, 0-9, '-', at most 63)")
            }
        }
        return (try name.string(), try namespace.string())
    }

    static func selector(_ spec: YAMLMapping) throws(LocatedError) -> [String: String] {
        var selector: [String: String] = [:]
        guard let selectorField = spec.optional("selector") else { return selector }
        let map = try selectorField.mapping(allowed: ["matchLabels"])
        if let labels = map.optional("matchLabels") { selector = try labels.labels() }
        return selector
    }

    static func action(_ spec: YAMLMapping) throws(LocatedError) -> MeshPolicy.Action {
        let actionField = try spec.required("action")
        let actionText = try actionField.string()
        guard let action = MeshPolicy.Action(rawValue: actionText) else {
            throw actionField.error("unknown action '\(actionText)' (ALLOW, DENY or AUDIT)")
        }
        return action
    }
}

extension MeshPolicy {
    /// The MeshPolicy documents of a policy file (other kinds are parsed and dropped).
    public static func parse(_ text: String, file: String) throws(LocatedError) -> [MeshPolicy] {
        try PolicyDocuments.parse(text, file: file).mesh
    }

    static func parse(_ top: YAMLMapping, document: YAMLField) throws(LocatedError) -> MeshPolicy {
        let (header, spec) = try PolicyDocuments.header(top, document: document)
        let rules = try spec.required("rules").sequence().map { item throws(LocatedError) in try parseRule(item) }
        return MeshPolicy(header: header, rules: rules)
    }

    private static func parseRule(_ field: YAMLField) throws(LocatedError) -> Rule {
        let map = try field.mapping(allowed: ["from", "to", "when"])
        var rule = Rule()
        if let from = map.optional("from") {
            rule.from = try from.sequence().map { item throws(LocatedError) in try parsePeer(item) }
        }
        if let to = map.optional("to") {
            rule.to = try to.sequence().map { item throws(LocatedError) in try parseDestination(item) }
        }
        if let when = map.optional("when") {
            rule.when = try when.sequence().map { item throws(LocatedError) in
                let condition = try item.mapping(allowed: ["header", "values"])
                let values = try condition.required("values")
                let list = try values.strings()
                guard !list.isEmpty else { throw values.error("needs at least one value") }
                return HeaderCondition(header: try condition.required("header").string(), values: list)
            }
        }
        return rule
    }

    private static func parsePeer(_ field: YAMLField) throws(LocatedError) -> Peer {
        let map = try field.mapping(allowed: ["identities", "namespaces", "services", "unauthenticated"])
        var peer = Peer()
        if let identities = map.optional("identities") {
            peer.identities = try identities.sequence().map { item throws(LocatedError) in
                try item.parse(IdentityPattern.init(parsing:))
            }
        }
        if let namespaces = map.optional("namespaces") { peer.namespaces = try namespaces.strings() }
        if let services = map.optional("services") {
            peer.services = try services.strings()
            for (index, service) in peer.services.enumerated() where !service.contains(".") {
                throw try services.sequence()[index].error("'\(service)' must be <name>.<namespace>")
            }
        }
        if let unauthenticated = map.optional("unauthenticated") {
            peer.unauthenticated = try unauthenticated.bool()
            if peer.unauthenticated && (!peer.identities.isEmpty || !peer.namespaces.isEmpty || !peer.services.isEmpty)
            {
                throw unauthenticated.error("an unauthenticated peer has no identity, namespace or service to match")
            }
        }
        if peer == Peer() {
            throw field.error("empty entry: name identities, namespaces, services or unauthenticated: true")
        }
        return peer
    }

    private static func parseDestination(_ field: YAMLField) throws(LocatedError) -> Destination {
        let map = try field.mapping(allowed: ["ports", "methods", "paths", "hosts"])
        var destination = Destination()
        if let ports = map.optional("ports") {
            destination.ports = try ports.sequence().map { item throws(LocatedError) in try item.port() }
        }
        if let methods = map.optional("methods") {
            for item in try methods.sequence() {
                let method = try item.string()
                guard !method.isEmpty,
                    method.utf8.allSatisfy({
                        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) || $0 == UInt8(ascii: "-")
                    })
                else {
                    throw item.error("'\(method)' is not an HTTP method (upper case, such as GET)")
                }
                destination.methods.append(method)
            }
        }
        if let paths = map.optional("paths") {
            destination.paths = try paths.sequence().map { item throws(LocatedError) in
                try item.parse(PathPattern.init(parsing:))
            }
        }
        if let hosts = map.optional("hosts") { destination.hosts = try hosts.strings().map { $0.lowercased() } }
        return destination
    }

    /// Bytes, not Characters: two names per policy on every reload, and a Character's
    /// properties are Unicode table lookups.
    static func isDNSLabel(_ text: String) -> Bool {
        let bytes = text.utf8
        return !bytes.isEmpty && bytes.count <= 63 && bytes.first != UInt8(ascii: "-")
            && bytes.last != UInt8(ascii: "-")
            && bytes.allSatisfy {
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains($0)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-")
            }
    }
}

extension EgressPolicy {
    static func parse(_ top: YAMLMapping, document: YAMLField) throws(LocatedError) -> EgressPolicy {
        let (header, spec) = try PolicyDocuments.header(top, document: document)
        let rules = try spec.required("rules").sequence().map { item throws(LocatedError) in
            let rule = try item.mapping(allowed: ["to"])
            return Rule(
                to: try rule.required("to").sequence().map { entry throws(LocatedError) in
                    try parseDestination(entry)
                }
            )
        }
        return EgressPolicy(header: header, rules: rules)
    }

    private static func parseDestination(_ field: YAMLField) throws(LocatedError) -> Destination {
        let map = try field.mapping(allowed: ["cidrs", "ports", "hosts"])
        var destination = Destination()
        if let cidrs = map.optional("cidrs") {
            destination.networks = try cidrs.sequence().map { item throws(LocatedError) in
                try item.parse(IPNetwork.init(parsing:))
            }
        }
        if let ports = map.optional("ports") {
            destination.ports = try ports.sequence().map { item throws(LocatedError) in try item.port() }
        }
        if let hosts = map.optional("hosts") { destination.hosts = try hosts.strings().map { $0.lowercased() } }
        if destination == Destination() {
            throw field.error("empty entry: name cidrs, ports or hosts")
        }
        return destination
    }
}
