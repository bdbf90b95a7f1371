import MeshIdentity

/// A configuration encodes to the file that reads back to it: the agent writes each
/// pod's sidecar configuration by encoding a `ProxyConfiguration` (JSON, which the
/// YAML reader reads), and `GET /config` shows the effective configuration the same
/// way, defaults filled in. Durations are written as durations (`30s`, `0.25s`), and
/// an endpoint that is off as `off`. It holds file paths only; key material never
/// appears in it. `parse(yaml: encoded) == configuration` is tested for every field.
extension ProxyConfiguration.Identity {
    private enum CodingKeys: String, CodingKey { case certificate, privateKey, trustBundle, reloadInterval }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(certificate, forKey: .certificate)
        try values.encode(privateKey, forKey: .privateKey)
        try values.encode(trustBundle, forKey: .trustBundle)
        try values.encode(Duration(reloadInterval), forKey: .reloadInterval)
    }
}

extension ProxyConfiguration.RouteMatch: Encodable {
    private enum CodingKeys: String, CodingKey { case network, port }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(network.description, forKey: .network)
        try values.encodeIfPresent(port, forKey: .port)
    }
}

extension ProxyConfiguration.Endpoint: Encodable {
    private enum CodingKeys: String, CodingKey { case address, identity }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(address, forKey: .address)
        try values.encode(identity.description, forKey: .identity)
    }
}

extension ProxyConfiguration.Timeouts {
    private enum CodingKeys: String, CodingKey {
        case connect, nextEndpoint, ejection, handshake, firstByte, preface, idle, drain
    }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        for (key, seconds) in [
            (CodingKeys.connect, connect), (.nextEndpoint, nextEndpoint), (.ejection, ejection),
            (.handshake, handshake),
            (.firstByte, firstByte), (.preface, preface),
            (.idle, idle), (.drain, drain),
        ] {
            try values.encode(Duration(seconds), forKey: key)
        }
    }
}

extension ProxyConfiguration.Admin {
    private enum CodingKeys: String, CodingKey { case listen, socket }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(listen?.description ?? "off", forKey: .listen)
        try values.encode(socket ?? "off", forKey: .socket)
    }
}

extension ProxyConfiguration.WorkloadAPI {
    private enum CodingKeys: String, CodingKey { case listen, socket }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(listen?.description ?? "off", forKey: .listen)
        if let socket { try values.encode(socket, forKey: .socket) }
    }
}

extension ProxyConfiguration.MetricsEndpoint {
    private enum CodingKeys: String, CodingKey { case listen }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(listen?.description ?? "off", forKey: .listen)
    }
}

extension ProxyConfiguration.Discovery {
    private enum CodingKeys: String, CodingKey { case agent, publish, cacheTTL }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(agent ?? "off", forKey: .agent)
        try values.encodeIfPresent(publish, forKey: .publish)
        try values.encode(Duration(cacheTTL), forKey: .cacheTTL)
    }
}

extension ProxyConfiguration.Publish {
    private enum CodingKeys: String, CodingKey { case service, endpoint, ports, weight, ttl }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(service, forKey: .service)
        try values.encodeIfPresent(endpoint, forKey: .endpoint)
        try values.encode(ports, forKey: .ports)
        try values.encode(weight, forKey: .weight)
        try values.encode(Duration(ttl), forKey: .ttl)
    }
}

extension ProxyConfiguration.DNS {
    private enum CodingKeys: String, CodingKey { case listen, suffix, upstreams, resolvConf, ttl }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        // nil (the default: on when there is an agent) is left out; none at all is `off`.
        if let listen {
            try listen.isEmpty ? values.encode("off", forKey: .listen) : values.encode(listen, forKey: .listen)
        }
        try values.encode(suffix, forKey: .suffix)
        try values.encode(upstreams, forKey: .upstreams)
        try values.encode(resolvConf, forKey: .resolvConf)
        try values.encode(ttl, forKey: .ttl)
    }
}

/// Seconds as the configuration writes them, in fixed point to the nanosecond the
/// reader keeps: `30s`, `0.25s`, `0.00001s`.
private struct Duration: Encodable {
    let seconds: Double

    init(_ seconds: Double) { self.seconds = seconds }

    func encode(to encoder: any Encoder) throws {
        var value = encoder.singleValueContainer()
        let nanoseconds = Int64((seconds * 1e9).rounded())
        let fraction = String(nanoseconds % 1_000_000_000)
        let digits = String(repeating: "0", count: 9 - fraction.count) + fraction
        let trimmed = digits.reversed().drop { $0 == "0" }.reversed()
        try value.encode("\(nanoseconds / 1_000_000_000)" + (trimmed.isEmpty ? "" : "." + String(trimmed)) + "s")
    }
}
