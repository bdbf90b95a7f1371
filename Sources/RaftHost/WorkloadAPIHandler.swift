import Foundation
import Logging
import MeshAPI
import MeshProcess
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// The workload API of a StatefulSet's pod: HTTP/1.1 on the pod's own `workload.sock`,
/// which its sidecar relays from 127.0.0.1:15020 in the pod. The socket is the
/// credential: it is made for that pod alone, so a request on it reads and writes that
/// pod's StatefulSet's group and nothing else.
///
/// | request | answer |
/// |---|---|
/// | `GET /v1/kv/KEY` | `WorkloadAPI.Entry`, 404 if absent; `?raw`: the value's bytes, revision in `X-BeeMesh-Revision` |
/// | `GET /v1/kv/PREFIX?prefix` | `WorkloadAPI.Range` |
/// | `GET /v1/kv/PREFIX?watch[&prefix][&revision=R]` | NDJSON `WorkloadAPI.Event`s after R (or from now), until the client goes; 410 if R is compacted |
/// | `PUT /v1/kv/KEY[?cas=R]` | the body is the value; `WorkloadAPI.WriteResult`, 409 when the swap's revision (0: absent) does not match |
/// | `DELETE /v1/kv/KEY[?cas=R]` | as `PUT` |
/// | `GET /v1/leader[?watch]` | `WorkloadAPI.Leader`, or one per line at every change |
///
/// Reads are linearizable (ReadIndex) unless `?stale`. Errors are `AdminError` JSON:
/// 400 a bad key or revision, 404, 409, 410, 413 a value over 64 KiB, 503 no group or no
/// leader here, 504 an outcome unknown (retry with `cas`), 507 the store full (16 MiB).
public final class WorkloadAPIHandler: ChannelInboundHandler {
    public typealias InboundIn = HTTPServerRequestPart
    public typealias OutboundOut = HTTPServerResponsePart

    /// What one pod's socket serves: its StatefulSet's group, and its own ordinal.
    public struct Binding: Sendable, Equatable {
        /// `namespace/name`.
        public var group: String
        public var ordinal: Int
        var statefulSet: String { String(group.split(separator: "/").last ?? "") }

        public init(group: String, ordinal: Int) {
            self.group = group
            self.ordinal = ordinal
        }
    }

    static let maximumValue = 64 * 1024
    static let maximumKey = 512
    /// Keys and values together, with `WorkloadState.keyOverhead` per key, per group:
    /// snapshots stay small.
    static let maximumStore = 16 << 20
    static let maximumKeys = 100_000
    /// Watches open at once on this node.
    static let maximumWatches = 256
    private static let watches = NIOLockedValueBox(0)
    static let requests = CounterFamily(
        "beemesh_workload_api_requests_total",
        by: "code",
        values: ["200", "400", "404", "409", "410", "413", "503", "504", "507"]
    )

    /// The group a request is for, if this process hosts it.
    public typealias Lookup = @Sendable (String) -> EventLoopFuture<RaftGroupHost?>

    private let lookup: Lookup
    private let binding: Binding
    private let logger: Logger
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var oversized = false
    private var streaming = false

    public init(lookup: @escaping Lookup, binding: Binding, logger: Logger) {
        self.lookup = lookup
        self.binding = binding
        self.logger = logger
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
            oversized = false
        case .body(var bytes):
            if body.count + bytes.readableBytes > Self.maximumValue {
                oversized = true
            } else {
                body += bytes.readBytes(length: bytes.readableBytes) ?? []
            }
        case .end:
            guard let head, !streaming else { return }
            self.head = nil
            if oversized { return reply(.payloadTooLarge, error: "a value is at most 64 KiB", head, context) }
            handle(head, context: context)
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        context.fireChannelInactive()
    }

    // MARK: routes

    private func handle(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let parts = head.uri.split(separator: "?", maxSplits: 1)
        let route = String(parts.first ?? "")
        let query = QueryString.decode(parts.count > 1 ? parts[1] : "")
        let flags = Set(query.map(\.name))
        func number(_ name: String) -> UInt64?? {
            guard let text = query.first(where: { $0.name == name })?.value else { return .some(nil) }
            return UInt64(text).map { .some($0) } ?? nil
        }
        let (cas, revision) = (number("cas"), number("revision"))
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        lookup(binding.group).hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            guard case .success(let host?) = result else {
                return handler.reply(
                    .serviceUnavailable,
                    error: "this node holds no Raft group for the pod",
                    head,
                    context
                )
            }
            if route == "/v1/leader" {
                guard head.method == .GET else {
                    return handler.reply(.methodNotAllowed, error: "GET only", head, context)
                }
                return flags.contains("watch")
                    ? handler.watchLeader(host, head, context) : handler.leader(host, head, context)
            }
            guard route.hasPrefix("/v1/kv/") || route == "/v1/kv",
                let key = String(route.dropFirst(min(route.count, "/v1/kv/".count))).removingPercentEncoding
            else { return handler.reply(.notFound, error: "no such route: /v1/kv/KEY and /v1/leader", head, context) }
            guard let cas, let revision else {
                return handler.reply(.badRequest, error: "cas and revision are revisions (numbers)", head, context)
            }
            guard key.utf8.count <= Self.maximumKey else {
                return handler.reply(.badRequest, error: "a key is at most 512 bytes", head, context)
            }
            switch head.method {
            case .GET where flags.contains("watch"):
                handler.watch(host, prefix: key, exact: !flags.contains("prefix"), after: revision, head, context)
            case .GET:
                handler.read(
                    host,
                    key: key,
                    prefix: flags.contains("prefix"),
                    raw: flags.contains("raw"),
                    stale: flags.contains("stale"),
                    head,
                    context
                )
            case .PUT, .POST:
                guard !key.isEmpty else { return handler.reply(.badRequest, error: "a key is needed", head, context) }
                handler.write(host, .put(key: key, value: handler.body, ifRevision: cas), head, context)
            case .DELETE:
                guard !key.isEmpty else { return handler.reply(.badRequest, error: "a key is needed", head, context) }
                handler.write(host, .delete(key: key, ifRevision: cas), head, context)
            default:
                handler.reply(.methodNotAllowed, error: "GET, PUT or DELETE", head, context)
            }
        }
    }

    private func read(
        _ host: RaftGroupHost,
        key: String,
        prefix: Bool,
        raw: Bool,
        stale: Bool,
        _ head: HTTPRequestHead,
        _ context: ChannelHandlerContext
    ) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        host.loop.flatSubmit {
            let ready = stale ? host.loop.makeSucceededFuture(host.state.revision) : host.linearizableRead()
            return ready.map { _ in
                prefix
                    ? (host.state.range(prefix: key), host.state.revision)
                    : (host.state.values[key].map { [(key, $0)] } ?? [], host.state.revision)
            }
        }.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .failure(let error):
                handler.reply(error, head, context)
            case .success(let (found, revision)):
                if prefix {
                    handler.reply(
                        .ok,
                        WorkloadAPI.Range(entries: found.map(Self.entry), revision: revision),
                        head,
                        context
                    )
                } else if let (key, value) = found.first {
                    if raw {
                        handler.reply(
                            .ok,
                            bytes: value.data,
                            contentType: "application/octet-stream",
                            revision: value.modRevision,
                            head,
                            context
                        )
                    } else {
                        handler.reply(.ok, Self.entry(key, value), head, context)
                    }
                } else {
                    handler.reply(.notFound, error: "no key \(key)", head, context)
                }
            }
        }
    }

    private func write(
        _ host: RaftGroupHost,
        _ command: WorkloadState.Command,
        _ head: HTTPRequestHead,
        _ context: ChannelHandlerContext
    ) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        host.loop.flatSubmit { () -> EventLoopFuture<WorkloadState.Outcome> in
            // Checked against what is applied (writes in flight may go over by their size).
            if case .put(let key, let value, _) = command, host.state.values[key] == nil,
                host.state.bytes + WorkloadState.size(key, value) > Self.maximumStore
                    || host.state.values.count >= Self.maximumKeys
            {
                return host.loop.makeFailedFuture(StoreFull())
            } else if case .put(let key, let value, _) = command, let old = host.state.values[key],
                host.state.bytes + value.count - old.data.count > Self.maximumStore
            {
                return host.loop.makeFailedFuture(StoreFull())
            }
            return host.write(command)
        }.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success(.done(let revision, _)):
                handler.reply(
                    .ok,
                    WorkloadAPI.WriteResult(succeeded: true, revision: revision, current: nil),
                    head,
                    context
                )
            case .success(.conflict(let current)):
                let key: String
                switch command {
                case .put(let name, _, _), .delete(let name, _): key = name
                default: key = ""
                }
                handler.reply(
                    .conflict,
                    WorkloadAPI.WriteResult(
                        succeeded: false,
                        revision: nil,
                        current: current.map { Self.entry(key, $0) }
                    ),
                    head,
                    context
                )
            case .failure(let error):
                handler.reply(error, head, context)
            }
        }
    }

    private func leader(_ host: RaftGroupHost, _ head: HTTPRequestHead, _ context: ChannelHandlerContext) {
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let binding = binding
        host.loop.flatSubmit {
            host.linearizableRead().map { _ in host.state.leadership }
        }.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            switch result {
            case .success(let leadership): handler.reply(.ok, Self.leader(leadership, binding), head, context)
            case .failure(let error): handler.reply(error, head, context)
            }
        }
    }

    // MARK: streams

    private func startStream(_ head: HTTPRequestHead, _ context: ChannelHandlerContext) -> Bool {
        let admitted = Self.watches.withLockedValue { count in
            guard count < Self.maximumWatches else { return false }
            count += 1
            return true
        }
        guard admitted else {
            reply(.tooManyRequests, error: "\(Self.maximumWatches) watches are open on this node", head, context)
            return false
        }
        streaming = true
        Self.requests.increment("200")
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: "application/x-ndjson")
        headers.add(name: "transfer-encoding", value: "chunked")
        headers.add(name: "connection", value: "close")
        context.writeAndFlush(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))),
            promise: nil
        )
        context.channel.closeFuture.whenComplete { _ in Self.watches.withLockedValue { $0 -= 1 } }
        return true
    }

    /// A sender for one stream's lines: from the group's loop to the channel's; a
    /// client that does not keep up (its socket's buffer full) is cut off, and resumes
    /// with `?revision=` the last it saw.
    private static func sender(_ channel: any Channel) -> @Sendable ([UInt8]) -> Void {
        { line in channel.eventLoop.execute { writeLine(line, to: channel) } }
    }

    /// Ends a stream: its last chunk, then the connection (the client reads again and
    /// watches from there).
    private static func end(_ channel: any Channel) {
        channel.eventLoop.execute {
            guard channel.isActive else { return }
            channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    /// On the channel's loop.
    private static func writeLine(_ line: [UInt8], to channel: any Channel) {
        guard channel.isActive else { return }
        guard channel.isWritable else {
            channel.close(promise: nil)
            return
        }
        var buffer = channel.allocator.buffer(capacity: line.count)
        buffer.writeBytes(line)
        channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(buffer)), promise: nil)
    }

    private func watch(
        _ host: RaftGroupHost,
        prefix: String,
        exact: Bool,
        after revision: UInt64?,
        _ head: HTTPRequestHead,
        _ context: ChannelHandlerContext
    ) {
        let channel = context.channel
        let send = Self.sender(channel)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let matches: @Sendable (WorkloadState.Event) -> Bool = { !exact || $0.key == prefix }
        host.loop.submit {
            host.watch(prefix: prefix, after: revision) { event in
                if matches(event), let line = try? MeshJSON.line(Self.event(event)) { send(line) }
            } end: {
                Self.end(channel)
            }
        }.hop(to: context.eventLoop).whenComplete { result in
            let (handler, context) = bound.value
            guard case .success(let watch) = result, let watch else {
                return handler.reply(
                    .gone,
                    error: "revision \(revision ?? 0) is compacted: read again, then watch from there",
                    head,
                    context
                )
            }
            guard handler.startStream(head, context) else {
                host.loop.execute { host.cancelWatch(watch.id) }
                return
            }
            // Written now, before any change the watcher queued since it was registered.
            for event in watch.replay where matches(event) {
                if let line = try? MeshJSON.line(Self.event(event)) { Self.writeLine(line, to: channel) }
            }
            channel.closeFuture.whenComplete { _ in host.loop.execute { host.cancelWatch(watch.id) } }
        }
    }

    private func watchLeader(_ host: RaftGroupHost, _ head: HTTPRequestHead, _ context: ChannelHandlerContext) {
        guard startStream(head, context) else { return }
        let channel = context.channel
        let send = Self.sender(channel)
        let binding = binding
        host.loop.execute {
            let watcher = host.watchLeader { leadership in
                if let line = try? MeshJSON.line(Self.leader(leadership, binding)) { send(line) }
            } end: {
                Self.end(channel)
            }
            channel.closeFuture.whenComplete { _ in host.loop.execute { host.cancelLeaderWatch(watcher) } }
        }
    }

    // MARK: answers

    static func entry(_ key: String, _ value: WorkloadState.Value) -> WorkloadAPI.Entry {
        WorkloadAPI.Entry(
            key: key,
            value: Data(value.data).base64EncodedString(),
            createRevision: value.createRevision,
            modRevision: value.modRevision,
            version: value.version
        )
    }

    static func event(_ event: WorkloadState.Event) -> WorkloadAPI.Event {
        WorkloadAPI.Event(
            type: event.kind.rawValue,
            key: event.key,
            value: event.value.map { Data($0.data).base64EncodedString() },
            revision: event.revision
        )
    }

    static func leader(_ leadership: WorkloadState.Leadership, _ binding: Binding) -> WorkloadAPI.Leader {
        WorkloadAPI.Leader(
            leader: leadership.ordinal.map { "\(binding.statefulSet)-\($0)" },
            ordinal: leadership.ordinal,
            revision: leadership.revision,
            isSelf: leadership.ordinal == binding.ordinal
        )
    }

    struct StoreFull: Error {}

    private func reply(_ error: any Error, _ head: HTTPRequestHead, _ context: ChannelHandlerContext) {
        switch error {
        case RaftGroupError.notLeader(let leader):
            reply(
                .serviceUnavailable,
                error:
                    "this node's member does not lead the group (leader: \(leader.map(RaftGroupHost.hex) ?? "none yet"))",
                head,
                context
            )
        case RaftGroupError.unknownOutcome:
            reply(.gatewayTimeout, error: "the outcome is unknown: read, or retry with cas", head, context)
        case is StoreFull:
            reply(
                .insufficientStorage,
                error: "the store holds at most 16 MiB (64 bytes a key besides its own) and 100,000 keys",
                head,
                context
            )
        default:
            reply(.serviceUnavailable, error: "\(error)", head, context)
        }
    }

    private func reply(
        _ status: HTTPResponseStatus,
        error: String,
        _ head: HTTPRequestHead,
        _ context: ChannelHandlerContext
    ) {
        reply(status, AdminError(error: error), head, context)
    }

    private func reply(
        _ status: HTTPResponseStatus,
        _ value: some Encodable,
        _ head: HTTPRequestHead,
        _ context: ChannelHandlerContext
    ) {
        let body = (try? MeshJSON.line(value)) ?? Array("{\"error\":\"cannot encode the answer\"}\n".utf8)
        reply(status, bytes: body, contentType: "application/json", revision: nil, head, context)
    }

    private func reply(
        _ status: HTTPResponseStatus,
        bytes: [UInt8],
        contentType: String,
        revision: UInt64?,
        _ head: HTTPRequestHead,
        _ context: ChannelHandlerContext
    ) {
        Self.requests.increment("\(status.code)")
        var headers = HTTPHeaders()
        headers.add(name: "content-type", value: contentType)
        headers.add(name: "content-length", value: "\(bytes.count)")
        if let revision { headers.add(name: "x-beemesh-revision", value: "\(revision)") }
        if !head.isKeepAlive { headers.add(name: "connection", value: "close") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))),
            promise: nil
        )
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !head.isKeepAlive {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            done.whenComplete { _ in bound.value.close(promise: nil) }
        }
    }
}
