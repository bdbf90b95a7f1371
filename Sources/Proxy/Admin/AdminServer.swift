import Logging
import MeshAPI
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import Prometheus
import Synchronization

/// What the admin API answers, separate from the HTTP plumbing: every route but the
/// follow stream is a function from a request target to a status and a body.
///
/// | route                 | answer                                                   |
/// |-----------------------|----------------------------------------------------------|
/// | `GET /live`           | 200 while the event loops answer                         |
/// | `GET /ready`          | 200 once every listener is bound, 503 before and while draining |
/// | `GET /config`         | the effective configuration (paths, never key material)  |
/// | `GET /identity`       | `IdentityStatus`: SPIFFE ID, validity, issuers           |
/// | `GET /policies`       | `PolicyStatus`: policies in force, refused files         |
/// | `GET /flows`          | `FlowList`: filters as `FlowFilter` documents, `limit`   |
/// | `GET /flows?follow=1` | NDJSON `FlowEvent`s as they happen                       |
/// | `GET /metrics`        | Prometheus text format (also on the metrics listener)   |
struct AdminAPI: Sendable {
    struct Response: Sendable {
        var status: HTTPResponseStatus
        var contentType: String
        var body: [UInt8]
    }

    let environment: ProxyEnvironment
    let metrics: PrometheusCollectorRegistry?
    let ready: @Sendable () -> Bool

    func respond(path: Substring, query: [(name: String, value: String)]) -> Response {
        switch path {
        case "/live":
            return json(["status": "live"])
        case "/ready":
            return ready() ? json(["status": "ready"]) : json(["status": "not ready"], status: .serviceUnavailable)
        case "/config":
            return json(environment.configuration)
        case "/identity":
            return json(identity())
        case "/policies":
            return json(policyStatus())
        case "/flows":
            do {
                return json(environment.flows.list(try FlowFilter(query: query)))
            } catch {
                return failure(.badRequest, "bad filter: \(error)")
            }
        case "/metrics":
            return metricsPage()
        default:
            return failure(.notFound, "no such endpoint: \(path)")
        }
    }

    func identity() -> IdentityStatus {
        let context = environment.credentials.current
        let leaf = context.credentials.leaf
        return IdentityStatus(
            spiffeID: context.identity?.description,
            trustDomain: context.trustDomain.description,
            notBefore: leaf.notBefore,
            notAfter: leaf.notAfter,
            secondsUntilExpiry: leaf.notAfter.timeIntervalSinceNow,
            serialNumber: leaf.serialNumber,
            issuers: context.credentials.chain.map(\.issuer)
        )
    }

    func policyStatus() -> PolicyStatus {
        let set = environment.policies.current
        let mesh = set.policies.map { policy in
            PolicyStatus.Loaded(
                kind: "MeshPolicy",
                name: policy.reference,
                action: policy.action.rawValue,
                rules: policy.rules.count
            )
        }
        let egress = environment.policies.egress.policies.map { policy in
            PolicyStatus.Loaded(
                kind: "EgressPolicy",
                name: policy.reference,
                action: policy.action.rawValue,
                rules: policy.rules.count
            )
        }
        return PolicyStatus(
            directory: environment.policies.directory,
            policies: mesh + egress,
            errors: environment.policies.errors.map(\.description),
            httpPorts: set.httpPorts.sorted()
        )
    }

    /// The Prometheus page, with the values that are read rather than counted
    /// (certificate expiry, flow-table use) brought up to date first.
    func metricsPage() -> Response {
        guard let metrics else { return failure(.notFound, "metrics are off (metrics.listen)") }
        let expiry = MetricNameDescriptor(
            namespace: "beemesh",
            metricName: "certificate_expiry",
            unitName: "seconds",
            helpText: "Seconds until the workload certificate expires"
        )
        metrics.makeGauge(descriptor: expiry)
            .set(environment.credentials.current.credentials.leaf.notAfter.timeIntervalSinceNow)
        let capacity = MetricNameDescriptor(
            namespace: "beemesh",
            metricName: "flow_table",
            unitName: "capacity",
            helpText: "Finished flows the flow table keeps"
        )
        metrics.makeGauge(descriptor: capacity).set(Double(environment.flows.capacity))
        return Response(
            status: .ok,
            contentType: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics.emitToBuffer()
        )
    }

    func json(_ value: some Encodable, status: HTTPResponseStatus = .ok) -> Response {
        do {
            var body = Array(try MeshJSON.encoder(pretty: true).encode(value))
            body.append(UInt8(ascii: "\n"))
            return Response(status: status, contentType: "application/json", body: body)
        } catch {
            return Response(
                status: .internalServerError,
                contentType: "text/plain",
                body: Array("cannot encode: \(error)\n".utf8)
            )
        }
    }

    func failure(_ status: HTTPResponseStatus, _ message: String) -> Response {
        json(AdminError(error: message), status: status)
    }
}

/// One admin API connection: HTTP/1.1 requests in (NIO's HTTP codec), `AdminAPI`
/// answers out; `GET /flows?follow=1` turns the connection into an NDJSON stream
/// until the client goes.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// Which routes a listener serves: the metrics listener serves `/metrics` only.
    enum Scope: Sendable {
        case admin
        case metrics
    }

    /// Events handed to the channel and not yet written, shared with the recorder.
    private final class Backlog: Sendable {
        let pending = Atomic<Int>(0)
    }

    private let api: AdminAPI
    private let scope: Scope
    /// The listener's connection count (nil: not capped), which also counts followers.
    private let limit: AdminConnections?
    private var head: HTTPRequestHead?
    private var subscription: FlowRecorder.Subscription?

    init(api: AdminAPI, scope: Scope, limit: AdminConnections?) {
        self.api = api
        self.scope = scope
        self.limit = limit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break  // no route takes a body
        case .end:
            guard let head, subscription == nil else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    /// A connection that sends no request for `AdminLimits.requestTimeout` is closed
    /// (a follower, which sends nothing after its request, is not).
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read, subscription == nil {
            api.environment.metrics.adminClosed("idle")
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let subscription { api.environment.flows.unsubscribe(subscription) }
        subscription = nil
        context.fireChannelInactive()
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let target = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let path = target[0]
        let query = target.count > 1 ? QueryString.decode(target[1]) : []
        guard head.method == .GET || head.method == .HEAD else {
            write(api.failure(.methodNotAllowed, "only GET"), head: head, context: context)
            return
        }
        if scope == .metrics, path != "/metrics" {
            write(api.failure(.notFound, "this listener serves /metrics only"), head: head, context: context)
            return
        }
        if path == "/flows", query.contains(where: { $0.name == "follow" && $0.value != "0" && $0.value != "false" }) {
            let filter: FlowFilter
            do {
                filter = try FlowFilter(query: query)
            } catch {
                write(api.failure(.badRequest, "bad filter: \(error)"), head: head, context: context)
                return
            }
            // Counted once its stream starts (a stream holds its connection to the end).
            guard limit?.admitFollower(context.channel) ?? true else {
                write(
                    api.failure(.tooManyRequests, "\(AdminLimits.maximumFollowers) followers on this listener"),
                    head: head,
                    context: context
                )
                return
            }
            follow(filter, head: head, context: context)
            return
        }
        write(api.respond(path: path, query: query), head: head, context: context)
    }

    private func write(_ response: AdminAPI.Response, head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: response.contentType)
        headers.add(name: "content-length", value: String(response.body.count))
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))),
            promise: nil
        )
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: response.body)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.whenComplete { _ in bound.value.close(promise: nil) }
        }
    }

    /// Streams matching flow events as NDJSON, one chunk per event, until the client
    /// closes. A client that reads too slowly loses events (counted, and announced by
    /// an `overrun` line) instead of growing this process's memory.
    private func follow(_ filter: FlowFilter, head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/x-ndjson")
        headers.add(name: "cache-control", value: "no-cache")
        context.writeAndFlush(
            wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .ok, headers: headers))),
            promise: nil
        )
        let channel = context.channel
        let backlog = Backlog()
        let subscription = FlowRecorder.Subscription(filter: filter) { line in
            guard backlog.pending.load(ordering: .relaxed) < FlowRecorder.followBacklog else { return false }
            backlog.pending.wrappingAdd(1, ordering: .relaxed)
            let part = HTTPServerResponsePart.body(.byteBuffer(channel.allocator.buffer(bytes: line)))
            channel.writeAndFlush(part).whenComplete { _ in
                backlog.pending.wrappingSubtract(1, ordering: .relaxed)
            }
            return true
        }
        self.subscription = subscription
        api.environment.flows.subscribe(subscription)
        // Reading on: the client's close is how the stream ends.
        context.read()
    }
}

@available(*, unavailable)
extension AdminHandler: Sendable {}

/// What one client of a sidecar's local endpoints (admin API, metrics) may hold: the
/// app container reaches them on loopback, and 1,100 idle connections once exhausted
/// the sidecar's descriptors.
enum AdminLimits {
    /// Connections open at once on one TCP admin or metrics listener; more are closed
    /// as soon as they are accepted.
    static let maximumConnections = 64
    /// Of those, the ones following flows (exempt from the request timeout).
    static let maximumFollowers = 8
    /// A connection with no request for this long is closed (followers excepted).
    static let requestTimeout = TimeAmount.seconds(Int64(10))
}

/// Counts one admin listener's open connections against `AdminLimits.maximumConnections`,
/// and its followers against `AdminLimits.maximumFollowers`.
final class AdminConnections: Sendable {
    private let open = Atomic<Int>(0)
    private let followers = Atomic<Int>(0)

    /// Whether one more follower may stream; if so, it is counted until `channel` closes.
    func admitFollower(_ channel: any Channel) -> Bool {
        let now = followers.wrappingAdd(1, ordering: .relaxed).newValue
        guard now <= AdminLimits.maximumFollowers else {
            followers.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        channel.closeFuture.whenComplete { _ in self.followers.wrappingSubtract(1, ordering: .relaxed) }
        return true
    }

    /// Whether one more may open; if so, it is counted until `channel` closes.
    func admit(_ channel: any Channel) -> Bool {
        let now = open.wrappingAdd(1, ordering: .relaxed).newValue
        guard now <= AdminLimits.maximumConnections else {
            open.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        channel.closeFuture.whenComplete { _ in self.open.wrappingSubtract(1, ordering: .relaxed) }
        return true
    }
}
