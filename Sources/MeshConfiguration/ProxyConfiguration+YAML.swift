import Logging
import MeshIdentity
import MeshNet
import Policy

/// A configuration that cannot be used, located as precisely as the YAML allows:
/// `FILE:LINE: FIELD: reason`.
public typealias ConfigurationError = LocatedError

extension ProxyConfiguration {
    /// Loads and validates a configuration file.
    public static func load(path: String) throws(ConfigurationError) -> ProxyConfiguration {
        try parse(yaml: try YAMLField.read(path), file: path)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    public static func parse(yaml: String, file: String) throws(ConfigurationError) -> ProxyConfiguration {
        let reader = try YAMLField.singleDocument(yaml, file: file)
        let top = try reader.mapping(allowed: [
            "identity", "inbound", "routes", "capture", "workload", "policies", "admin", "metrics", "flows", "timeouts",
            "workers", "relayEngine", "logLevel", "discovery", "dns", "workloadAPI",
        ])

        let identityNode = try top.required("identity")
        let identityMap = try identityNode.mapping(allowed: [
            "certificate", "privateKey", "trustBundle", "reloadInterval",
        ])
        var identity = Identity(
            certificate: try identityMap.required("certificate").string(),
            privateKey: try identityMap.required("privateKey").string(),
            trustBundle: try identityMap.required("trustBundle").string()
        )
        if let node = identityMap.optional("reloadInterval") {
            identity.reloadInterval = try node.duration(positive: true)
        }
        var configuration = ProxyConfiguration(identity: identity)

        if let inboundNode = top.optional("inbound") {
            let map = try inboundNode.mapping(allowed: [
                "listen", "services", "ports", "appAddress", "maxUnauthenticated", "maxUnauthenticatedPerSource",
            ])
            for (key, limit) in [
                ("maxUnauthenticated", \ProxyConfiguration.Inbound.maxUnauthenticated),
                ("maxUnauthenticatedPerSource", \.maxUnauthenticatedPerSource),
            ] {
                guard let node = map.optional(key) else { continue }
                let value = try node.integer()
                guard (1...1_000_000).contains(value) else { throw node.error("between 1 and 1000000, got \(value)") }
                configuration.inbound[keyPath: limit] = value
            }
            if let node = map.optional("listen") { configuration.inbound.listen = try node.hostPort() }
            if let node = map.optional("services") {
                configuration.inbound.services = try node.sequence().map { item throws(ConfigurationError) in
                    try item.serviceName()
                }
            }
            if let node = map.optional("ports") {
                configuration.inbound.ports = try node.sequence().map { item throws(ConfigurationError) in
                    try item.port()
                }
            }
            if let node = map.optional("appAddress") { configuration.inbound.appAddress = try node.string() }
        }

        if let routesNode = top.optional("routes") {
            var listens: Set<HostPort> = []
            for routeNode in try routesNode.sequence() {
                let map = try routeNode.mapping(allowed: ["listen", "match", "service", "port", "endpoints"])
                var listen: HostPort?
                if let listenNode = map.optional("listen") {
                    let address = try listenNode.hostPort()
                    // Port 0 asks the kernel for a fresh port each time: never a clash.
                    guard address.port == 0 || listens.insert(address).inserted else {
                        throw listenNode.error("\(address) is used by two routes")
                    }
                    listen = address
                }
                var matches: [RouteMatch] = []
                if let matchNode = map.optional("match") {
                    matches = try matchNode.sequence().map { item throws(ConfigurationError) in
                        try item.routeMatch()
                    }
                }
                guard listen != nil || !matches.isEmpty else {
                    throw routeNode.error("a route needs a listen address, match entries, or both")
                }
                let endpointsNode = try map.required("endpoints")
                let endpoints = try endpointsNode.sequence().map { item throws(ConfigurationError) in
                    let endpoint = try item.mapping(allowed: ["address", "identity"])
                    return Endpoint(
                        address: try endpoint.required("address").hostPort(),
                        identity: try endpoint.required("identity").spiffeID()
                    )
                }
                guard !endpoints.isEmpty else { throw endpointsNode.error("a route needs at least one endpoint") }
                configuration.routes.append(
                    Route(
                        listen: listen,
                        match: matches,
                        service: try map.required("service").serviceName(),
                        port: try map.required("port").port(),
                        endpoints: endpoints
                    )
                )
            }
        }

        if let captureNode = top.optional("capture") {
            let map = try captureNode.mapping(allowed: ["outbound", "inbound"])
            if let node = map.optional("outbound") {
                configuration.capture.outbound = try node.sequence().map { item throws(ConfigurationError) in
                    try item.hostPort()
                }
            }
            if let node = map.optional("inbound") {
                configuration.capture.inbound = try node.sequence().map { item throws(ConfigurationError) in
                    try item.hostPort()
                }
            }
        }

        if let workloadNode = top.optional("workload") {
            let map = try workloadNode.mapping(allowed: ["namespace", "labels"])
            if let node = map.optional("namespace") { configuration.workload.namespace = try node.string() }
            if let node = map.optional("labels") { configuration.workload.labels = try node.labels() }
        }
        if let policiesNode = top.optional("policies") {
            let map = try policiesNode.mapping(allowed: ["directory", "httpPorts"])
            if let node = map.optional("directory") { configuration.policies.directory = try node.string() }
            if let node = map.optional("httpPorts") {
                configuration.policies.httpPorts = try node.sequence().map { item throws(ConfigurationError) in
                    try item.port()
                }
            }
        }

        if let adminNode = top.optional("admin") {
            let map = try adminNode.mapping(allowed: ["listen", "socket"])
            if let node = map.optional("listen") { configuration.admin.listen = try node.optionalHostPort() }
            if let node = map.optional("socket") { configuration.admin.socket = try node.socketPath() }
        }
        if let workloadNode = top.optional("workloadAPI") {
            let map = try workloadNode.mapping(allowed: ["listen", "socket"])
            if let node = map.optional("listen") { configuration.workloadAPI.listen = try node.optionalHostPort() }
            if let node = map.optional("socket") { configuration.workloadAPI.socket = try node.socketPath() }
            if configuration.workloadAPI.listen != nil, configuration.workloadAPI.socket == nil {
                throw (map.optional("listen") ?? workloadNode).error("a listener needs the agent's socket: set socket")
            }
        }
        if let metricsNode = top.optional("metrics") {
            let map = try metricsNode.mapping(allowed: ["listen"])
            if let node = map.optional("listen") { configuration.metrics.listen = try node.optionalHostPort() }
        }
        if let flowsNode = top.optional("flows") {
            let map = try flowsNode.mapping(allowed: ["capacity", "record", "recordQuery"])
            if let node = map.optional("capacity") {
                let capacity = try node.integer()
                guard (0...1_000_000).contains(capacity) else {
                    throw node.error("must be between 0 and 1000000, got \(capacity)")
                }
                configuration.flows.capacity = capacity
            }
            if let node = map.optional("record") { configuration.flows.record = try node.bool() }
            if let node = map.optional("recordQuery") { configuration.flows.recordQuery = try node.bool() }
        }

        if let timeoutsNode = top.optional("timeouts") {
            let map = try timeoutsNode.mapping(allowed: [
                "connect", "nextEndpoint", "ejection", "handshake", "firstByte", "preface", "idle", "drain",
            ])
            if let node = map.optional("firstByte") {
                configuration.timeouts.firstByte = try node.duration(positive: true)
            }
            if let node = map.optional("connect") { configuration.timeouts.connect = try node.duration(positive: true) }
            if let node = map.optional("nextEndpoint") {
                configuration.timeouts.nextEndpoint = try node.duration(positive: true)
            }
            if let node = map.optional("ejection") {
                configuration.timeouts.ejection = try node.duration(positive: true)
            }
            if let node = map.optional("handshake") {
                configuration.timeouts.handshake = try node.duration(positive: true)
            }
            if let node = map.optional("preface") { configuration.timeouts.preface = try node.duration(positive: true) }
            if let node = map.optional("idle") { configuration.timeouts.idle = try node.duration(positive: true) }
            if let node = map.optional("drain") { configuration.timeouts.drain = try node.duration(positive: false) }
        }
        if let discoveryNode = top.optional("discovery") {
            let map = try discoveryNode.mapping(allowed: ["agent", "publish", "cacheTTL"])
            if let node = map.optional("agent") {
                let text = try node.string()
                if text != "off" {
                    guard text.hasPrefix("/") || text.hasPrefix("http://") else {
                        throw node.error("'\(text)' is neither a socket path nor http://host:port (or off)")
                    }
                    configuration.discovery.agent = text
                }
            }
            if let node = map.optional("cacheTTL") {
                configuration.discovery.cacheTTL = try node.duration(positive: false)
            }
            if let publishNode = map.optional("publish") {
                let publish = try publishNode.mapping(allowed: ["service", "endpoint", "ports", "weight", "ttl"])
                var value = Publish(service: try publish.required("service").serviceName())
                if let node = publish.optional("endpoint") { value.endpoint = try node.hostPort() }
                if let node = publish.optional("ports") {
                    value.ports = try node.sequence().map { item throws(ConfigurationError) in try item.port() }
                }
                if let node = publish.optional("weight") {
                    let weight = try node.integer()
                    guard (1...10_000).contains(weight) else { throw node.error("must be between 1 and 10000") }
                    value.weight = UInt16(weight)
                }
                if let node = publish.optional("ttl") {
                    value.ttl = try node.duration(positive: true)
                    guard value.ttl >= 3 else { throw node.error("at least 3s (republished every third of it)") }
                }
                guard configuration.discovery.agent != nil else {
                    throw publishNode.error("publishing needs discovery.agent")
                }
                let endpoint = value.endpoint ?? configuration.inbound.listen
                guard endpoint.host != "0.0.0.0", endpoint.host != "::", endpoint.port != 0 else {
                    throw (publish.optional("endpoint") ?? publishNode)
                        .error("other sidecars cannot dial \(endpoint): set publish.endpoint to a reachable host:port")
                }
                configuration.discovery.publish = value
            }
        }
        if let dnsNode = top.optional("dns") {
            let map = try dnsNode.mapping(allowed: ["listen", "suffix", "upstreams", "resolvConf", "ttl"])
            if let node = map.optional("listen") {
                if (try? node.string()) == "off" {
                    configuration.dns.listen = []
                } else {
                    guard configuration.discovery.agent != nil else {
                        throw node.error("mesh DNS needs discovery.agent (or listen: off)")
                    }
                    configuration.dns.listen = try node.sequence().map { item throws(ConfigurationError) in
                        try item.hostPort()
                    }
                }
            }
            if let node = map.optional("suffix") {
                let suffix = try node.string().lowercased()
                guard !suffix.isEmpty, !suffix.hasPrefix("."), !suffix.hasSuffix("."), suffix.utf8.count < 64 else {
                    throw node.error("'\(suffix)' is not a domain suffix such as mesh")
                }
                configuration.dns.suffix = suffix
            }
            if let node = map.optional("upstreams") {
                configuration.dns.upstreams = try node.sequence().map { item throws(ConfigurationError) in
                    let text = try item.string()
                    // A bare address means port 53.
                    if let value = HostPort(text), IPNetwork.parseAddress(value.host) != nil { return value }
                    guard IPNetwork.parseAddress(text) != nil else { throw item.error("'\(text)' is not an address") }
                    return HostPort(host: text, port: 53)
                }
            }
            if let node = map.optional("resolvConf") { configuration.dns.resolvConf = try node.string() }
            if let node = map.optional("ttl") {
                let ttl = try node.integer()
                guard (0...86_400).contains(ttl) else { throw node.error("between 0 and 86400 seconds") }
                configuration.dns.ttl = UInt32(ttl)
            }
        }
        if let node = top.optional("workers") {
            let workers = try node.integer()
            guard (1...64).contains(workers) else { throw node.error("must be between 1 and 64, got \(workers)") }
            configuration.workers = workers
        }
        if let node = top.optional("relayEngine") {
            let text = try node.string()
            guard let engine = RelayEngine(rawValue: text) else {
                throw node.error("unknown relay engine '\(text)' (direct or channel)")
            }
            configuration.relayEngine = engine
        }
        if let node = top.optional("logLevel") { configuration.logLevel = try node.logLevel() }
        return configuration
    }
}

extension YAMLField {
    /// `{network: 10.0.0.12, port: 8080}`: an address or CIDR, and an optional port.
    func routeMatch() throws(ConfigurationError) -> ProxyConfiguration.RouteMatch {
        let map = try mapping(allowed: ["network", "port"])
        let networkNode = try map.required("network")
        let network = try networkNode.parse(IPNetwork.init(parsing:))
        return ProxyConfiguration.RouteMatch(network: network, port: try map.optional("port")?.port())
    }
}
