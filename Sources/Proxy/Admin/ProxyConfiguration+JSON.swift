/// `GET /config` encodes the effective configuration, defaults filled in (the
/// structs' conformances are declared with them). It holds file paths only; key
/// material never appears in it. These types are written as they are in YAML.
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

extension HostPort: Encodable {
    /// As written in configuration: `host:port` or `[v6]:port`.
    public func encode(to encoder: any Encoder) throws {
        var value = encoder.singleValueContainer()
        try value.encode(description)
    }
}
