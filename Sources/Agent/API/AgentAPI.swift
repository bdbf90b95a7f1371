import Foundation
import Kademlia
import Logging
import MeshAPI
import Metrics
import NIOConcurrencyHelpers
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
/// | `GET /v1/raft?namespace=&name=` | `[RaftGroupStatus]`: the StatefulSets' Raft groups this node hosts |
/// | `GET /v1/logs/NAMESPACE/POD?container=&follow=1&tail=N` | the container's output (streamed) |
/// | `GET /flows?…` | the flows of every sidecar on the node, merged (`FlowList`, `pod` set) |
///
/// Errors are `AdminError` JSON with a 4xx or 5xx status. A record that does not verify
/// is refused with 400 and the reason, before anything is sent into the DHT.
///
/// Every request is decided for its caller (`APICaller`) before it is served: an
/// unauthenticated one gets 401, one its grants do not cover 403 with the reason, both
/// counted (`beemesh_api_refused_total{reason}`) and logged. `APIAccess` says who may
/// do what; a pod's own socket serves `GET /dht/services/…` and that pod's own
/// `PUT /dht/records` only.
struct AgentAPI: Sendable {
    let dht: DHTService
    let validator: ServiceRecordValidator
    /// Who may use the control socket for what.
    var access = APIAccess()
    var logger = Logger(label: "beemesh-agent.api")
    /// The process's metrics (nil: `/metrics` answers 404).
    var metrics: PrometheusCollectorRegistry?
    /// What the API counts: the agent's table, which its DHT service holds.
    var counters: AgentMetrics { dht.metrics }
    /// The pods side (nil: a DHT-only agent, whose `/v1` answers 404).
    var reconciler: Reconciler?
    /// The sidecars `/flows` asks, by `namespace/name`: the reconciler's running pods
    /// unless set (tests set it to sidecars of their own).
    var sidecars: (@Sendable () -> [(pod: String, socket: String)])?

    struct Response: Sendable {
        var status: HTTPResponseStatus
        var body: [UInt8]
        var contentType = "application/json"
    }

    static let maximumBody = 64 * 1024

    func respond(
        method: HTTPMethod,
        path: String,
        body: [UInt8],
        caller: APICaller,
        on loop: any EventLoop
    ) -> EventLoopFuture<Response> {
        let route = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        if method == .GET, route == "/live" || route == "/ready" {
            return loop.makeSucceededFuture(Response(status: .ok, body: Array("ok\n".utf8), contentType: "text/plain"))
        }
        switch caller {
        case .network:
            return loop.makeSucceededFuture(
                refuse(.unauthorized, "the TCP listener authenticates nobody: use the agent's socket", caller, route)
            )
        case .pod(let binding):
            switch (method, route) {
            case (.GET, _) where route.hasPrefix("/dht/services/"):
                return lookup(String(route.dropFirst("/dht/services/".count)), on: loop)
            case (.PUT, "/dht/records"):
                return publish(body, for: binding, on: loop)
            default:
                return loop.makeSucceededFuture(
                    refuse(.forbidden, "a pod's socket serves lookups and its own record only", caller, route)
                )
            }
        case .local(let user):
            let permissions = access.permissions(for: user)
            guard permissions.isKnown else {
                return loop.makeSucceededFuture(
                    refuse(.forbidden, "\(user) has no grant in the agent's api.access", caller, route)
                )
            }
            if !permissions.admin, route == "/metrics" {
                return loop.makeSucceededFuture(refuse(.forbidden, "\(route) is for admins", caller, route))
            }
            if !permissions.mayPublish, route == "/dht/records" {
                return loop.makeSucceededFuture(refuse(.forbidden, "no grant with publish: true", caller, route))
            }
            return serve(method: method, path: path, route: route, body: body, as: user, permissions, on: loop)
        }
    }

    private func serve(
        method: HTTPMethod,
        path: String,
        route: String,
        body: [UInt8],
        as user: LocalUser,
        _ permissions: Permissions,
        on loop: any EventLoop
    ) -> EventLoopFuture<Response> {
        switch (method, route) {
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
            // Off the event loop, which also runs the DHT: the store writes files and
            // `/flows` asks every sidecar.
            let promise = loop.makePromise(of: Response.self)
            DispatchQueue.global().async {
                promise.succeed(
                    workloads(
                        method: method,
                        route: route,
                        query: query,
                        body: body,
                        reconciler: reconciler,
                        caller: .local(user),
                        permissions
                    )
                )
            }
            return promise.futureResult
        case (.GET, _) where route.hasPrefix("/dht/services/"):
            return lookup(String(route.dropFirst("/dht/services/".count)), on: loop)
        case (.PUT, "/dht/records"):
            return publish(body, for: nil, on: loop)
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
        reconciler: Reconciler,
        caller: APICaller,
        _ permissions: Permissions
    ) -> Response {
        let parts = route.split(separator: "/").map(String.init)
        switch (method, parts.count > 1 ? parts[1] : parts.first ?? "") {
        case (.POST, "apply"), (.POST, "delete"):
            let file = query.first { $0.name == "file" }?.value ?? "manifest"
            let parsed: [KubernetesObject]
            do {
                parsed = try KubernetesObject.parse(yaml: String(decoding: body, as: UTF8.self), file: file)
            } catch {
                counters.manifestRefused()
                return failure(.badRequest, "\(error)")
            }
            // Every object, and for a delete what is stored under its key, must be one
            // the caller may write: all or nothing, like the apply itself.
            for workload in parsed + parsed.compactMap({ reconciler.workload($0.key) }) {
                if let reason = Self.writeRefusal(workload, permissions) {
                    return refuse(.forbidden, reason, caller, route)
                }
            }
            do {
                let lines =
                    parts[1] == "apply" ? try reconciler.apply(parsed) : try reconciler.delete(parsed.map(\.key))
                return json(ApplyResult(objects: lines))
            } catch let conflict as ApplyConflict {
                counters.manifestRefused()
                return failure(.conflict, "\(conflict)")
            } catch {
                return failure(.internalServerError, "cannot store: \(error)")
            }
        case (.DELETE, "objects") where parts.count == 5:
            guard let kind = KubernetesObject.Kind(name: parts[2]) else {
                return failure(.badRequest, "unknown kind '\(parts[2])'")
            }
            let key = "\(kind.rawValue)/\(parts[3])/\(parts[4])"
            if let stored = reconciler.workload(key), let reason = Self.writeRefusal(stored, permissions) {
                return refuse(.forbidden, reason, caller, route)
            }
            if !permissions.mayRead(namespace: parts[3]) {
                return refuse(.forbidden, "no grant covers namespace \(parts[3])", caller, route)
            }
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
            return json(
                reconciler.pods.filter {
                    (namespace == nil || $0.namespace == namespace) && permissions.mayRead(namespace: $0.namespace)
                }
            )
        case (.GET, "deployments"):
            let namespace = query.first { $0.name == "namespace" }?.value
            return json(
                reconciler.deployments.filter {
                    (namespace == nil || $0.namespace == namespace) && permissions.mayRead(namespace: $0.namespace)
                }
            )
        case (.GET, "flows"):
            return mergedFlows(query: query, reconciler: reconciler, permissions)
        case (.GET, "raft"):
            guard let groups = reconciler.raftGroups else { return json([RaftGroupStatus]()) }
            let namespace = query.first { $0.name == "namespace" }?.value
            let name = query.first { $0.name == "name" }?.value
            guard let statuses = try? groups.statuses.wait() else {
                return failure(.serviceUnavailable, "the Raft groups do not answer")
            }
            return json(
                statuses.filter { status in
                    let parts = status.group.split(separator: "/").map(String.init)
                    return permissions.mayRead(namespace: parts[0]) && (namespace.map { $0 == parts[0] } ?? true)
                        && (name.map { $0 == parts.last } ?? true)
                }
            )
        default:
            return failure(.notFound, "no such resource: \(method) \(route)")
        }
    }

    /// Why `permissions` may not write `workload`; nil: they may.
    static func writeRefusal(_ workload: KubernetesObject, _ permissions: Permissions) -> String? {
        // A Service is its namesake account's: pods publish themselves only under the
        // Service named like their service account, so writing it is writing for it.
        let account = workload.template?.serviceAccount ?? (workload.kind == .service ? workload.name : nil)
        guard !permissions.mayWrite(namespace: workload.namespace, serviceAccount: account) else { return nil }
        let object = "\(workload.kind.rawValue.lowercased())/\(workload.name)"
        if let account {
            return "no grant covers service account \(account) in namespace \(workload.namespace) (\(object))"
        }
        return "no grant covers namespace \(workload.namespace) (\(object))"
    }

    /// The deadline of one sidecar's answer to `/flows`: a stalled sidecar costs this
    /// much, never the whole answer.
    var sidecarDeadline = 1.0

    /// Every sidecar's flows that match, each marked with its pod, oldest first. The
    /// sidecars are asked in parallel, each with a short deadline.
    private func mergedFlows(
        query: [(name: String, value: String)],
        reconciler: Reconciler,
        _ permissions: Permissions
    ) -> Response {
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
        let sidecars = (self.sidecars?() ?? reconciler.sidecarSockets).filter { sidecar in
            let namespace = String(sidecar.pod.prefix { $0 != "/" })
            return permissions.mayRead(namespace: namespace) && (filter.namespace.map { $0 == namespace } ?? true)
        }
        let answers = NIOLockedValueBox([(pod: String, list: FlowList)]())
        let asked = DispatchGroup()
        for (pod, socket) in sidecars {
            DispatchQueue.global().async(group: asked) {
                let client = AdminClient(endpoint: .unix(path: socket), timeout: sidecarDeadline)
                guard let list = try? client.get(path, as: FlowList.self) else { return }
                answers.withLockedValue { $0.append((pod, list)) }
            }
        }
        _ = asked.wait(timeout: .now() + sidecarDeadline * 2)
        for (pod, list) in answers.withLockedValue({ $0 }) {
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
        // leader.NAME.NAMESPACE: the record a StatefulSet's leading pod publishes.
        guard let (service, namespace) = ServiceRecord.parse(meshName: name) else {
            return loop.makeSucceededFuture(failure(.badRequest, "'\(name)' is not NAME.NAMESPACE"))
        }
        let key = ServiceRecord.key(service: service, namespace: namespace)
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

    /// Stores a signed record; through a pod's socket (`binding`) only one for that pod's
    /// own identity, service and endpoint.
    private func publish(_ body: [UInt8], for binding: PodBinding?, on loop: any EventLoop) -> EventLoopFuture<Response>
    {
        guard let request = try? MeshJSON.decoder().decode(PublishRequest.self, from: Data(body)) else {
            return loop.makeSucceededFuture(failure(.badRequest, "the body is not a PublishRequest"))
        }
        guard let value = Data(base64Encoded: request.record) else {
            return loop.makeSucceededFuture(failure(.badRequest, "record: not base64"))
        }
        let record: Record
        do {
            record = try SignedServiceRecord(decoding: Array(value)).dhtRecord
            let service = try validator.check(record)
            if let binding, let reason = Self.publishRefusal(service, binding) {
                counters.publishRefused("not_own_record")
                return loop.makeSucceededFuture(refuse(.forbidden, reason, .pod(binding), "/dht/records"))
            }
            if let binding, service.isLeaderRecord {
                return leads(binding, unless: service, on: loop).flatMap { reason in
                    if let reason {
                        self.counters.publishRefused("not_leader")
                        return loop.makeSucceededFuture(self.refuse(.forbidden, reason, .pod(binding), "/dht/records"))
                    }
                    return self.dht.publish(record).map {
                        self.json(PublishResult(key: record.key.description, replicas: $0))
                    }
                }
            }
        } catch {
            counters.publishRefused(error.code.rawValue)
            return loop.makeSucceededFuture(failure(.badRequest, "record refused: \(error)"))
        }
        return dht.publish(record).map { replicas in
            json(PublishResult(key: record.key.description, replicas: replicas))
        }
    }

    /// Why a pod may not publish `record`; nil: it is the pod's own (or its `leader.`
    /// record, if it is a StatefulSet's pod: whether it leads is checked apart).
    static func publishRefusal(_ record: ServiceRecord, _ binding: PodBinding) -> String? {
        if record.spiffeID != binding.identity {
            return "the record names \(record.spiffeID), not this pod's identity \(binding.identity)"
        }
        var service = "\(record.service).\(record.namespace)"
        if record.isLeaderRecord {
            guard binding.workload != nil else {
                return "pod \(binding.pod) is no StatefulSet's: it publishes no leader record"
            }
            service.removeFirst(ServiceRecord.leaderPrefix.count)
        }
        guard service == binding.service else {
            return "pod \(binding.pod) publishes \(binding.service ?? "no service"), not \(service)"
        }
        guard record.endpoint == binding.endpoint else {
            return "the record's endpoint \(record.endpoint) is not this pod's \(binding.endpoint ?? "(not known yet)")"
        }
        return nil
    }

    /// Nil if the pod's ordinal leads its StatefulSet (a linearizable read of the
    /// group: a member cut off from it cannot vouch), or if `record` is a withdrawal
    /// (a tombstone: no port, which no client dials); else why the pod may not say it
    /// leads.
    private func leads(
        _ binding: PodBinding,
        unless record: ServiceRecord,
        on loop: any EventLoop
    ) -> EventLoopFuture<String?> {
        if record.ports.isEmpty { return loop.makeSucceededFuture(nil) }
        guard let workload = binding.workload, let groups = reconciler?.raftGroups else {
            return loop.makeSucceededFuture("this node hosts no Raft group for pod \(binding.pod)")
        }
        // On the group's loop, where its state lives.
        return groups.host(workload.group).flatMap { host -> EventLoopFuture<String?> in
            guard let host else {
                return groups.loop.makeSucceededFuture("this node hosts no Raft group for pod \(binding.pod)")
            }
            return host.linearizableRead().map { _ in
                host.state.leadership.ordinal == workload.ordinal
                    ? nil : "pod \(binding.pod) does not lead \(workload.group)"
            }.recover { error in "the group cannot say who leads \(workload.group): \(error)" }
        }.hop(to: loop)
    }

    /// A refusal: counted, logged with the caller, answered with the reason.
    func refuse(_ status: HTTPResponseStatus, _ reason: String, _ caller: APICaller, _ route: String) -> Response {
        let label =
            switch status {
            case .unauthorized: "unauthenticated"
            case .tooManyRequests: "overloaded"
            default: "forbidden"
            }
        counters.apiRefused(label)
        logger.warning(
            "agent API request refused",
            metadata: ["caller": "\(caller)", "route": "\(route)", "reason": "\(reason)"]
        )
        return failure(status, "\(label): \(reason)")
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
    private let caller: APICaller
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var oversized = false

    init(api: AgentAPI, caller: APICaller) {
        self.api = api
        self.caller = caller
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
            if head.method == .GET, head.uri.hasPrefix("/v1/logs/"), let reconciler = api.reconciler,
                case .local(let user) = caller
            {
                let namespace = head.uri.split(separator: "/").dropFirst(2).first.map(String.init) ?? ""
                guard api.access.permissions(for: user).mayRead(namespace: namespace) else {
                    let refusal = api.refuse(.forbidden, "no grant covers namespace \(namespace)", caller, "/v1/logs")
                    write(refusal, keepAlive: false, context: context)
                    return
                }
                streamLogs(head: head, reconciler: reconciler, context: context)
                return
            }
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let answer: EventLoopFuture<AgentAPI.Response> =
                oversized
                ? context.eventLoop.makeSucceededFuture(
                    AgentAPI.Response(status: .payloadTooLarge, body: Array("{\"error\":\"body too large\"}\n".utf8))
                )
                : api.respond(method: head.method, path: head.uri, body: body, caller: caller, on: context.eventLoop)
            answer.whenComplete { result in
                let (handler, context) = bound.value
                let response =
                    (try? result.get())
                    ?? AgentAPI.Response(status: .internalServerError, body: Array("{\"error\":\"failed\"}\n".utf8))
                handler.write(response, keepAlive: head.isKeepAlive, context: context)
            }
        }
    }

    /// Log streams open at once; more are refused with 429, so followers cannot pile
    /// up threads.
    static let maximumLogStreams = 32
    private static let logStreams = NIOLockedValueBox(0)

    /// `GET /v1/logs/NAMESPACE/POD?container=&follow=1&tail=N`: podman's log stream,
    /// demultiplexed, passed on in chunks until it ends or the client goes. A client
    /// that goes ends the stream at once, even while the container is quiet (its
    /// podman connection is shut down), so no thread outlives its reader.
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
        let admitted = Self.logStreams.withLockedValue { count in
            guard count < Self.maximumLogStreams else { return false }
            count += 1
            return true
        }
        guard admitted else {
            let refusal = api.refuse(
                .tooManyRequests,
                "\(Self.maximumLogStreams) log streams are open",
                caller,
                "/v1/logs"
            )
            write(refusal, keepAlive: false, context: context)
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
        let cancellation = StreamCancellation()
        channel.closeFuture.whenComplete { _ in cancellation.cancel() }
        Thread.detachNewThread {
            defer { Self.logStreams.withLockedValue { $0 -= 1 } }
            try? podman.logs(container, follow: follow, tail: tail, cancellation: cancellation) { bytes in
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
