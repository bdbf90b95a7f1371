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
/// | `POST /v1/apply?file=NAME` | Kubernetes YAML in, `ApplyResult` out (all objects or none) |
/// | `POST /v1/delete?file=NAME` | the objects named in the YAML removed |
/// | `DELETE /v1/objects/KIND/NAMESPACE/NAME` | one object removed |
/// | `GET /v1/pods`, `GET /v1/deployments` | `[PodStatus]`, `[DeploymentStatus]` |
/// | `GET /v1/logs/NAMESPACE/POD?container=&follow=1&tail=N` | the container's output (streamed) |
/// | `GET /flows?…` | the flows of every sidecar on the node, merged (`FlowList`, `pod` set) |
///
/// Errors are `AdminError` JSON with a 4xx or 5xx status. A record that does not verify
/// is refused with 400 and the reason, before anything is sent into the DHT.
struct AgentAPI: Sendable {
    let dht: DHTService
    let validator: ServiceRecordValidator
    /// The process's metrics (nil: `/metrics` answers 404).
    var metrics: PrometheusCollectorRegistry?
    /// The pods side (nil: a DHT-only agent, whose `/v1` answers 404).
    var reconciler: Reconciler?

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
        case (_, _) where route.hasPrefix("/v1/") || route == "/flows":
            guard let reconciler else {
                return loop.makeSucceededFuture(failure(.notFound, "this agent runs no pods (no pods: section)"))
            }
            let query = QueryString.decode(path.split(separator: "?", maxSplits: 1).dropFirst().first ?? "")
            return loop.makeSucceededFuture(
                workloads(method: method, route: route, query: query, body: body, reconciler: reconciler)
            )
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

    // MARK: workloads

    private func workloads(
        method: HTTPMethod,
        route: String,
        query: [(name: String, value: String)],
        body: [UInt8],
        reconciler: Reconciler
    ) -> Response {
        let parts = route.split(separator: "/").map(String.init)
        switch (method, parts.count > 1 ? parts[1] : parts.first ?? "") {
        case (.POST, "apply"), (.POST, "delete"):
            let file = query.first { $0.name == "file" }?.value ?? "manifest"
            let parsed: [Workload]
            do {
                parsed = try Workload.parse(yaml: String(decoding: body, as: UTF8.self), file: file)
            } catch {
                Counter(label: "beemesh_manifests_refused_total").increment()
                return failure(.badRequest, "\(error)")
            }
            do {
                let lines =
                    parts[1] == "apply" ? try reconciler.apply(parsed) : try reconciler.delete(parsed.map(\.key))
                return json(ApplyResult(objects: lines))
            } catch {
                return failure(.internalServerError, "cannot store: \(error)")
            }
        case (.DELETE, "objects") where parts.count == 5:
            guard let kind = Workload.Kind(name: parts[2]) else {
                return failure(.badRequest, "unknown kind '\(parts[2])'")
            }
            let key = "\(kind.rawValue)/\(parts[3])/\(parts[4])"
            do {
                let lines = try reconciler.delete([key])
                return lines.first?.hasSuffix("not found") == true
                    ? failure(.notFound, "\(kind.rawValue.lowercased())/\(parts[4]) not found in \(parts[3])")
                    : json(ApplyResult(objects: lines))
            } catch {
                return failure(.internalServerError, "cannot store: \(error)")
            }
        case (.GET, "pods"):
            let namespace = query.first { $0.name == "namespace" }?.value
            return json(reconciler.pods.filter { namespace == nil || $0.namespace == namespace })
        case (.GET, "deployments"):
            let namespace = query.first { $0.name == "namespace" }?.value
            return json(reconciler.deployments.filter { namespace == nil || $0.namespace == namespace })
        case (.GET, "flows"):
            return mergedFlows(query: query, reconciler: reconciler)
        default:
            return failure(.notFound, "no such resource: \(method) \(route)")
        }
    }

    /// Every sidecar's flows that match, each marked with its pod, oldest first.
    private func mergedFlows(query: [(name: String, value: String)], reconciler: Reconciler) -> Response {
        guard !query.contains(where: { $0.name == "follow" }) else {
            return failure(.badRequest, "follow: stream one sidecar's flows with --proxy")
        }
        let filter: FlowFilter
        do {
            filter = try FlowFilter(query: query)
        } catch {
            return failure(.badRequest, "\(error)")
        }
        var forwarded = filter
        forwarded.pod = nil
        forwarded.namespace = nil
        let path = "/flows" + (forwarded.queryItems.isEmpty ? "" : "?" + QueryString.encode(forwarded.queryItems))
        var flows: [FlowRecord] = []
        var capacity = 0
        var evicted: UInt64 = 0
        var overruns: UInt64 = 0
        for (pod, socket) in reconciler.sidecarSockets {
            if let namespace = filter.namespace, !pod.hasPrefix(namespace + "/") { continue }
            guard let list = try? AdminClient(endpoint: .unix(path: socket), timeout: 5).get(path, as: FlowList.self)
            else { continue }
            flows += list.flows.map { flow in
                var flow = flow
                flow.pod = pod
                return flow
            }
            capacity += list.capacity
            evicted += list.evicted
            overruns += list.overruns
        }
        flows.sort { ($0.start, $0.pod ?? "", $0.id) < ($1.start, $1.pod ?? "", $1.id) }
        return json(
            FlowList(
                flows: filter.apply(flows, now: Date()),
                capacity: capacity,
                evicted: evicted,
                overruns: overruns,
                recording: true
            )
        )
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
            if head.method == .GET, head.uri.hasPrefix("/v1/logs/"), let reconciler = api.reconciler {
                streamLogs(head: head, reconciler: reconciler, context: context)
                return
            }
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

    /// `GET /v1/logs/NAMESPACE/POD?container=&follow=1&tail=N`: podman's log stream,
    /// demultiplexed, passed on in chunks until it ends or the client goes.
    private func streamLogs(head: HTTPRequestHead, reconciler: Reconciler, context: ChannelHandlerContext) {
        let (route, queryText) = head.uri.split(separator: "?", maxSplits: 1).map(String.init).splitFirst()
        let parts = route.split(separator: "/").map(String.init)
        let query = QueryString.decode(Substring(queryText ?? ""))
        func value(_ name: String) -> String? { query.first { $0.name == name }?.value }
        guard parts.count == 4,
            let container = reconciler.containerName(pod: parts[3], namespace: parts[2], container: value("container"))
        else {
            let body = Array("{\"error\":\"no such pod or container\"}\n".utf8)
            write(AgentAPI.Response(status: .notFound, body: body), keepAlive: false, context: context)
            return
        }
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "text/plain; charset=utf-8")
        headers.add(name: "transfer-encoding", value: "chunked")
        headers.add(name: "connection", value: "close")
        context.writeAndFlush(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
            promise: nil
        )
        let channel = context.channel
        let follow = value("follow") == "1" || value("follow") == "true"
        let tail = value("tail").flatMap(Int.init)
        let podman = reconciler.podman
        Thread.detachNewThread {
            try? podman.logs(container, follow: follow, tail: tail) { bytes in
                guard channel.isActive else { return false }
                channel.eventLoop.execute {
                    var buffer = channel.allocator.buffer(capacity: bytes.count)
                    buffer.writeBytes(bytes)
                    channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: nil)
                }
                return true
            }
            channel.eventLoop.execute {
                channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in
                    channel.close(promise: nil)
                }
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

extension Array where Element == String {
    /// The first element and the second, if any (`path?query`).
    fileprivate func splitFirst() -> (String, String?) { (first ?? "", count > 1 ? self[1] : nil) }
}
