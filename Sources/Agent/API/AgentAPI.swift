import Foundation
import Kademlia
import Logging
import MeshAPI
import Metrics
import NIOCore
import NIOHTTP1
import Prometheus

/// The agent's local API, JSON over HTTP/1.1 on a unix socket (and optionally TCP):
///
/// | request | answer |
/// |---|---|
/// | `GET /live`, `GET /ready` | `ok` |
/// | `GET /metrics` | Prometheus text format (`beemesh_dht_…`) |
/// | `GET /dht/peers` | `DHTPeers`: this node, its routing table, records held |
/// | `GET /dht/services/NAME.NAMESPACE` | `ServiceLookup`: the checked, signed endpoints |
/// | `PUT /dht/records` | `PublishRequest` in, `PublishResult` out: a signed record stored |
///
/// Errors are `AdminError` JSON with a 4xx or 5xx status. A record that does not verify
/// is refused with 400 and the reason, before anything is sent into the DHT.
struct AgentAPI: Sendable {
    let dht: DHTService
    let validator: ServiceRecordValidator
    /// The process's metrics (nil: `/metrics` answers 404).
    var metrics: PrometheusCollectorRegistry?

    struct Response: Sendable {
        var status: HTTPResponseStatus
        var body: [UInt8]
        var contentType = "application/json"
    }

    static let maximumBody = 64 * 1024

    func respond(method: HTTPMethod, path: String, body: [UInt8], on loop: any EventLoop) -> EventLoopFuture<Response> {
        let route = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        switch (method, route) {
        case (.GET, "/live"), (.GET, "/ready"):
            return loop.makeSucceededFuture(Response(status: .ok, body: Array("ok\n".utf8), contentType: "text/plain"))
        case (.GET, "/metrics"):
            guard let metrics else { return loop.makeSucceededFuture(failure(.notFound, "no metrics")) }
            return loop.makeSucceededFuture(
                Response(
                    status: .ok,
                    body: metrics.emitToBuffer(),
                    contentType: "text/plain; version=0.0.4; charset=utf-8"
                )
            )
        case (.GET, "/dht/peers"):
            return dht.peers().map { json($0) }
        case (.GET, _) where route.hasPrefix("/dht/services/"):
            return lookup(String(route.dropFirst("/dht/services/".count)), on: loop)
        case (.PUT, "/dht/records"):
            return publish(body, on: loop)
        case (_, "/live"), (_, "/ready"), (_, "/metrics"), (_, "/dht/peers"), (_, "/dht/records"):
            return loop.makeSucceededFuture(failure(.methodNotAllowed, "\(method) is not allowed on \(route)"))
        default:
            return loop.makeSucceededFuture(failure(.notFound, "no such resource: \(route)"))
        }
    }

    private func lookup(_ name: String, on loop: any EventLoop) -> EventLoopFuture<Response> {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty }) else {
            return loop.makeSucceededFuture(failure(.badRequest, "'\(name)' is not NAME.NAMESPACE"))
        }
        let key = ServiceRecord.key(service: String(parts[0]), namespace: String(parts[1]))
        return dht.findValue(key).map { result in
            var endpoints: [ServiceLookup.Endpoint] = []
            for record in result.records {
                guard let service = try? validator.check(record) else { continue }  // refused by the node already
                endpoints.append(
                    ServiceLookup.Endpoint(
                        endpoint: service.endpoint,
                        ports: service.ports,
                        identity: service.spiffeID,
                        weight: service.weight,
                        sequence: service.sequence,
                        expires: Date(timeIntervalSince1970: Double(service.expires) / 1e9),
                        record: Data(record.value).base64EncodedString()
                    )
                )
            }
            return json(
                ServiceLookup(service: name, endpoints: endpoints, hops: result.hops, messages: result.messages)
            )
        }
    }

    private func publish(_ body: [UInt8], on loop: any EventLoop) -> EventLoopFuture<Response> {
        guard let request = try? MeshJSON.decoder().decode(PublishRequest.self, from: Data(body)) else {
            return loop.makeSucceededFuture(failure(.badRequest, "the body is not a PublishRequest"))
        }
        guard let value = Data(base64Encoded: request.record) else {
            return loop.makeSucceededFuture(failure(.badRequest, "record: not base64"))
        }
        let record: Record
        do {
            record = try SignedServiceRecord(decoding: Array(value)).dhtRecord
            _ = try validator.check(record)
        } catch {
            Counter(label: "beemesh_dht_publish_refused_total", dimensions: [("reason", error.code.rawValue)])
                .increment()
            return loop.makeSucceededFuture(failure(.badRequest, "record refused: \(error)"))
        }
        return dht.publish(record).map { replicas in
            json(PublishResult(key: record.key.description, replicas: replicas))
        }
    }

    private func json(_ value: some Encodable) -> Response {
        do {
            return Response(status: .ok, body: Array(try MeshJSON.encoder().encode(value)) + [0x0A])
        } catch {
            return failure(.internalServerError, "cannot encode the answer: \(error)")
        }
    }

    private func failure(_ status: HTTPResponseStatus, _ message: String) -> Response {
        let encoded = (try? MeshJSON.encoder().encode(AdminError(error: message))) ?? Data()
        let body: [UInt8] = Array(encoded) + [0x0A]
        return Response(status: status, body: body)
    }
}

/// Reads one request at a time (body up to `AgentAPI.maximumBody`) and writes the API's
/// answer. Keep-alive as the client asks.
final class AgentAPIHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let api: AgentAPI
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var oversized = false

    init(api: AgentAPI) {
        self.api = api
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
            oversized = false
        case .body(var bytes):
            if body.count + bytes.readableBytes > AgentAPI.maximumBody {
                oversized = true
            } else {
                body += bytes.readBytes(length: bytes.readableBytes) ?? []
            }
        case .end:
            guard let head else { return }
            self.head = nil
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let answer: EventLoopFuture<AgentAPI.Response> =
                oversized
                ? context.eventLoop.makeSucceededFuture(
                    AgentAPI.Response(status: .payloadTooLarge, body: Array("{\"error\":\"body too large\"}\n".utf8))
                )
                : api.respond(method: head.method, path: head.uri, body: body, on: context.eventLoop)
            answer.whenComplete { result in
                let (handler, context) = bound.value
                let response =
                    (try? result.get())
                    ?? AgentAPI.Response(status: .internalServerError, body: Array("{\"error\":\"failed\"}\n".utf8))
                handler.write(response, keepAlive: head.isKeepAlive, context: context)
            }
        }
    }

    private func write(_ response: AgentAPI.Response, keepAlive: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: response.contentType)
        headers.add(name: "content-length", value: "\(response.body.count)")
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))),
            promise: nil
        )
        var buffer = context.channel.allocator.buffer(capacity: response.body.count)
        buffer.writeBytes(response.body)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.whenComplete { _ in bound.value.close(promise: nil) }
        }
    }
}
