import MeshNet
import NIOCore
import Policy

/// Where a captured outbound connection goes, decided from the destination the app
/// dialled: the rules `CapturedOutboundHandler` carries out, in this order, with no
/// socket, nftables or clock (`CaptureDecisionTests`).
///
/// | destination                                   | decision                        |
/// |-----------------------------------------------|---------------------------------|
/// | the capture listener itself (not redirected)  | `loop`: refused                 |
/// | a virtual IP mesh DNS gave out                | `meshService`: resolved in the DHT, then routed |
/// | matched by a configured route                 | `route`: mTLS to its endpoints  |
/// | anything else an egress policy allows         | `passThrough`: plaintext        |
/// | anything else                                 | `egressDenied`                  |
/// | no IP address                                 | `noAddress`: refused            |
enum CaptureDecision {
    case loop
    case meshService(String, port: UInt16)
    case route(CaptureRoutes.Entry)
    case passThrough(PolicyDecision)
    case egressDenied(PolicyDecision)
    case noAddress

    /// - Parameters:
    ///   - listener: the capture listener's own address.
    ///   - virtualService: the mesh service a virtual IP stands for (nil: none, or no
    ///     discovery).
    static func decide(
        _ destination: SocketAddress,
        listener: SocketAddress?,
        virtualService: ([UInt8]) -> String?,
        routes: CaptureRoutes,
        egress: EgressSet
    ) -> CaptureDecision {
        if destination == listener { return .loop }
        guard let host = destination.ipAddress, let port = destination.port,
            let (family, address) = IPNetwork.parseAddress(host)
        else {
            return .noAddress
        }
        if let service = virtualService(IPNetwork.bytes(address, family: family)) {
            return .meshService(service, port: UInt16(truncatingIfNeeded: port))
        }
        if let entry = routes.route(for: destination) { return .route(entry) }
        let decision = egress.evaluate(EgressRequest(family: family, address: address, port: UInt16(port)))
        return decision.isAllowed ? .passThrough(decision) : .egressDenied(decision)
    }
}
