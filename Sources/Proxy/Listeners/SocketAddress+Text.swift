import MeshConfiguration
import NIOCore

extension SocketAddress {
    /// `host:port` or `[v6]:port`, as configuration writes addresses (`HostPort`); the
    /// plain description for an address without IP and port (a unix socket).
    var text: String {
        guard let host = ipAddress, let port else { return "\(self)" }
        return HostPort(host: host, port: port).description
    }
}
