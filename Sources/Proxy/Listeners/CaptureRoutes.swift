import Capture
import MeshConfiguration
import MeshNet
import NIOCore

/// Which route a captured connection belongs to, by the destination the app dialled.
///
/// The most specific entry wins: the longest prefix, then an entry naming the port over
/// one that takes any port, then configuration order. Pure; built once at start-up.
struct CaptureRoutes: Sendable {
    struct Entry: Sendable {
        let match: ProxyConfiguration.RouteMatch
        let route: ProxyConfiguration.Route
        let rotation: EndpointRotation
    }

    private let entries: [Entry]

    init(_ routes: [(ProxyConfiguration.Route, EndpointRotation)]) {
        let all = routes.flatMap { route, rotation in
            route.match.map { Entry(match: $0, route: route, rotation: rotation) }
        }
        // A stable sort keeps configuration order among equally specific entries.
        entries = all.enumerated().sorted { left, right in
            let (a, b) = (left.element.match, right.element.match)
            if a.network.prefixLength != b.network.prefixLength {
                return a.network.prefixLength > b.network.prefixLength
            }
            if (a.port != nil) != (b.port != nil) { return a.port != nil }
            return left.offset < right.offset
        }.map(\.element)
    }

    var isEmpty: Bool { entries.isEmpty }

    func route(for destination: SocketAddress) -> Entry? {
        guard let host = destination.ipAddress, let port = destination.port,
            let (family, address) = IPNetwork.parseAddress(host)
        else { return nil }
        return entries.first { entry in
            entry.match.network.contains(address, family: family)
                && (entry.match.port == nil || entry.match.port == UInt16(port))
        }
    }
}
