extension MeshPolicy {
    /// Every document of a policy file (`---` separates several; JSON is accepted, as a
    /// YAML subset). One bad document rejects the whole file, with file, line and field.
    public static func parse(_ text: String, file: String) throws(LocatedError) -> [MeshPolicy] {
        var policies: [MeshPolicy] = []
        var names: Set<String> = []
        for document in try YAMLField.documents(text, file: file) {
            let policy = try parse(document)
            guard names.insert(policy.reference).inserted else {
                throw document.error("policy \(policy.reference) is defined twice in this file")
            }
            policies.append(policy)
        }
        return policies
    }

    static func parse(_ document: YAMLField) throws(LocatedError) -> MeshPolicy {
        let top = try document.mapping(allowed: ["apiVersion", "kind", "metadata", "spec"])
        let version = try top.required("apiVersion")
        guard try version.string() == "beemesh.io/v1" else {
            throw version.error("must be beemesh.io/v1, got '\(try version.string())'")
        }
        let kind = try top.required("kind")
        switch try kind.string() {
        case "MeshPolicy": break
        case "EgressPolicy": throw kind.error("EgressPolicy is not supported by this version of beemesh-proxy")
        case let other: throw kind.error("unknown kind '\(other)' (MeshPolicy)")
        }
        let metadata = try top.required("metadata").mapping(allowed: ["name", "namespace"])
        let name = try metadata.required("name")
        let namespace = try metadata.required("namespace")
        for field in [name, namespace] {
            let text = try field.string()
            guard Self.isDNSLabel(text) else {
                throw field.error("'\(text)' must be a DNS label (a-z, 0-9, '-', at most 63)")
            }
        }
        let spec = try top.required("spec").mapping(allowed: ["selector", "action", "rules"])
        var selector: [String: String] = [:]
        if let selectorField = spec.optional("selector") {
            let map = try selectorField.mapping(allowed: ["matchLabels"])
            if let labels = map.optional("matchLabels") {
                guard let mapping = labels.node.mapping else { throw labels.error("must be a mapping") }
                for (key, value) in mapping {
                    guard let key = key.string, let value = value.scalar?.string else {
                        throw labels.error("labels are string keys and string values")
                    }
                    selector[key] = value
                }
            }
        }
        let actionField = try spec.required("action")
        let actionText = try actionField.string()
        guard let action = Action(rawValue: actionText) else {
            throw actionField.error("unknown action '\(actionText)' (ALLOW, DENY or AUDIT)")
        }
        let rules = try spec.required("rules").sequence().map { item throws(LocatedError) in try parseRule(item) }
        return MeshPolicy(
            name: try name.string(),
            namespace: try namespace.string(),
            selector: selector,
            action: action,
            rules: rules,
            source: PolicySource(file: document.file, line: document.line)
        )
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
                do {
                    return try IdentityPattern(parsing: try item.string())
                } catch let failure as PolicyPatternError {
                    throw item.error(failure.description)
                } catch let failure as LocatedError {
                    throw failure
                } catch {
                    throw item.error("\(error)")
                }
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
                guard !method.isEmpty, method.allSatisfy({ $0.isASCII && ($0.isUppercase || $0 == "-") }) else {
                    throw item.error("'\(method)' is not an HTTP method (upper case, such as GET)")
                }
                destination.methods.append(method)
            }
        }
        if let paths = map.optional("paths") {
            destination.paths = try paths.sequence().map { item throws(LocatedError) in
                do {
                    return try PathPattern(parsing: try item.string())
                } catch let failure as PolicyPatternError {
                    throw item.error(failure.description)
                } catch let failure as LocatedError {
                    throw failure
                } catch {
                    throw item.error("\(error)")
                }
            }
        }
        if let hosts = map.optional("hosts") { destination.hosts = try hosts.strings().map { $0.lowercased() } }
        return destination
    }

    static func isDNSLabel(_ text: String) -> Bool {
        !text.isEmpty && text.utf8.count <= 63 && text.first != "-" && text.last != "-"
            && text.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
    }
}
