import Logging
import MeshAPI
import Metrics
import NIOCore
import Policy

/// Decides every HTTP/1.1 request of an admitted connection on an HTTP port, between
/// the mTLS handler and the relay of the mesh side.
///
/// Requests (inbound) are framed by `HTTPMessageParser`; each target is normalized
/// (`RequestTarget`) before it is decided, and an allowed request goes on to the app
/// with that normalized target, so the app routes what the policy decided; its other
/// bytes are unchanged. A denied request's bytes are dropped and it is answered `403`
/// by the gate, one whose target cannot be normalized `400` (and the connection ends). Responses (outbound, from the app) are framed too, so that each 403 is written
/// exactly where its request's response belongs, after the responses of the requests
/// before it, however deeply the client pipelines: keep-alive connections stay usable.
/// A request that cannot be framed is never forwarded: it gets `400` (when no response
/// is pending) and the connection closes. A `101 Switching Protocols` turns the gate
/// into a pass-through.
final class HTTPPolicyGate: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// One request's place in the response order.
    private enum Slot {
        case forwarded
        case denied(closeAfter: Bool)
        /// A target that cannot be normalized: 400, then the connection ends.
        case refused
    }

    /// The methods of forwarded requests, for framing their responses (HEAD has no
    /// body), shared with the response parser.
    private final class ForwardedMethods {
        var methods: [String] = []
        var next = 0
    }

    private let peer: PeerIdentity?
    private let port: UInt16
    private let policies: PolicyStore
    private let flow: Flow?
    /// Flow records keep a request's query (off: the path only, since queries often
    /// carry tokens).
    private let recordQuery: Bool
    private var logger: Logger
    private var requests = HTTPMessageParser.requests()
    private var responses: HTTPMessageParser
    private let metrics: ProxyMetrics
    private let forwarded = ForwardedMethods()
    private var slots: [Slot] = []
    private var droppingCurrent = false
    private var interimResponse = false
    private var tunnel = false
    private var closing = false

    init(
        peer: PeerIdentity?,
        port: UInt16,
        policies: PolicyStore,
        flow: Flow?,
        recordQuery: Bool = false,
        metrics: ProxyMetrics = ProxyMetrics(),
        logger: Logger
    ) {
        self.metrics = metrics
        self.peer = peer
        self.port = port
        self.policies = policies
        self.flow = flow
        self.recordQuery = recordQuery
        self.logger = logger
        let methods = forwarded
        responses = HTTPMessageParser { head throws(HTTPFramingError) in
            let status = Int(head.first) ?? 0
            if (100..<200).contains(status) { return .none }  // interim: the final response follows
            let method = methods.next < methods.methods.count ? methods.methods[methods.next] : "GET"
            methods.next += 1
            if method == "HEAD" || status == 204 || status == 304 { return .none }
            do throws(HTTPFramingError) {
                let framing = try HTTPMessageParser.requestFraming(head)
                return framing == .none && head.header("content-length") == nil ? .untilClose : framing
            } catch {
                // A transfer coding other than chunked: the body runs until close.
                guard error.code == .unsupportedTransferEncoding else { throw error }
                return .untilClose
            }
        }
    }

    // MARK: requests, peer → app

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let input = unwrapInboundIn(data)
        guard !tunnel else {
            context.fireChannelRead(data)
            return
        }
        guard !closing else { return }
        switch requests.feed(input) {
        case .failure(let error):
            refuse(error, context: context)
        case .success(let pieces):
            for piece in pieces {
                guard !closing else { return }  // a refused target: nothing after it is read
                switch piece {
                case .head(let head, let bytes):
                    decide(head, bytes: bytes, context: context)
                case .body(let bytes):
                    if !droppingCurrent { context.fireChannelRead(wrapInboundOut(bytes)) }
                case .end:
                    droppingCurrent = false
                }
            }
        }
    }

    private func decide(_ head: HTTPHead, bytes: ByteBuffer, context: ChannelHandlerContext) {
        let target: RequestTarget
        do {
            target = try RequestTarget(head.second, method: head.first)
        } catch {
            refuse(head, error, context: context)
            return
        }
        let path = target.path
        let host = head.header("host")
        let http = PolicyRequest.HTTP(
            method: head.first,
            path: path,
            host: host,
            headers: head.headers
        )
        let decision = policies.current.evaluate(PolicyRequest(peer: peer, port: port, http: http))
        decisionCounter(decision).increment()
        for audit in decision.audits {
            logger.info(
                "audit rule matched",
                metadata: ["audit": "\(audit)", "method": "\(head.first)", "path": "\(path)"]
            )
        }
        flow?.httpRequest(
            HTTPExchange(
                method: head.first,
                authority: host,
                path: recordQuery ? target.target : String(path),
                status: decision.isAllowed ? nil : 403,
                latency: decision.isAllowed ? nil : 0,
                verdict: FlowRecord.Verdict(decision),
                policy: decision.policyLabel,
                rule: decision.decidedBy?.rule
            ),
            now: .now()
        )
        if decision.isAllowed {
            slots.append(.forwarded)
            forwarded.methods.append(head.first)
            droppingCurrent = false
            let normalized = target.target
            context.fireChannelRead(
                wrapInboundOut(normalized == head.second ? bytes : Self.retarget(bytes, head, normalized))
            )
            return
        }
        logger.warning(
            "HTTP request denied by policy",
            metadata: ["method": "\(head.first)", "path": "\(path)", "decision": "\(decision)"]
        )
        droppingCurrent = true
        // A client that waits for 100 Continue may or may not send its body after a
        // final answer: the stream cannot be framed after that, so the connection ends.
        let waitsForContinue = head.header("expect")?.lowercased() == "100-continue"
        slots.append(.denied(closeAfter: !head.keepAlive || waitsForContinue))
        answerDenied(context: context)
    }

    /// The counter of the last decision's verdict and policy, kept: the requests of one
    /// connection are mostly decided alike, and a metric looked up by its labels costs a
    /// registry lock and string hashing.
    private var lastDecisionCounter: (verdict: PolicyDecision.Verdict, policy: String, counter: Counter)?

    private func decisionCounter(_ decision: PolicyDecision) -> Counter {
        let policy = decision.policyLabel
        if let last = lastDecisionCounter, last.verdict == decision.verdict, last.policy == policy {
            return last.counter
        }
        let counter = Counter(
            label: "beemesh_http_policy_decisions_total",
            dimensions: [("verdict", decision.verdict.rawValue), ("policy", policy)]
        )
        lastDecisionCounter = (decision.verdict, policy, counter)
        return counter
    }

    /// The head's bytes with the request line's target replaced.
    private static func retarget(_ bytes: ByteBuffer, _ head: HTTPHead, _ target: String) -> ByteBuffer {
        var rest = bytes
        let lineEnd = rest.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) ?? rest.readerIndex
        rest.moveReaderIndex(to: lineEnd)  // the line's end, kept as it came (CRLF or LF)
        if rest.readableBytesView.first == UInt8(ascii: "\n"),
            lineEnd > bytes.readerIndex, bytes.getInteger(at: lineEnd - 1, as: UInt8.self) == UInt8(ascii: "\r")
        {
            rest.moveReaderIndex(to: lineEnd - 1)
        }
        var output = ByteBufferAllocator().buffer(capacity: rest.readableBytes + target.utf8.count + 32)
        output.writeString("\(head.first) \(target) \(head.version)")
        output.writeImmutableBuffer(rest)
        return output
    }

    /// A request whose target cannot be normalized: never forwarded; answered 400 in
    /// its turn, and the connection ends (its body, if any, cannot be told apart).
    private func refuse(_ head: HTTPHead, _ refusal: RequestTarget.Refusal, context: ChannelHandlerContext) {
        logger.warning(
            "HTTP request refused: ambiguous target",
            metadata: ["method": "\(head.first)", "error": "\(refusal)"]
        )
        metrics.httpParseError(refusal.code.rawValue)
        flow?.httpRequest(
            HTTPExchange(
                method: head.first,
                authority: head.header("host"),
                path: "",
                status: 400,
                latency: 0,
                verdict: .denied,
                policy: nil,
                rule: nil
            ),
            now: .now()
        )
        closing = true
        slots.append(.refused)
        answerDenied(context: context)
    }

    private func refuse(_ error: HTTPFramingError, context: ChannelHandlerContext) {
        logger.warning("HTTP request refused: cannot be framed", metadata: ["error": "\(error)"])
        metrics.httpParseError(error.code.rawValue)
        closing = true
        if slots.isEmpty {
            write(status: "400 Bad Request", body: "bad request\n", closeAfter: true, context: context)
        } else {
            context.close(promise: nil)
        }
    }

    /// Writes the 403s whose turn has come (every response before them is complete).
    private func answerDenied(context: ChannelHandlerContext) {
        while let slot = slots.first {
            switch slot {
            case .forwarded:
                return
            case .denied(let closeAfter):
                slots.removeFirst()
                write(status: "403 Forbidden", body: "RBAC: access denied\n", closeAfter: closeAfter, context: context)
                if closeAfter {
                    closing = true
                    return
                }
            case .refused:
                slots.removeFirst()
                closing = true
                write(status: "400 Bad Request", body: "ambiguous request target\n", closeAfter: true, context: context)
                return
            }
        }
    }

    private func write(status: String, body: String, closeAfter: Bool, context: ChannelHandlerContext) {
        var response = context.channel.allocator.buffer(capacity: 128)
        response.writeString(
            "HTTP/1.1 \(status)\r\ncontent-type: text/plain\r\ncontent-length: \(body.utf8.count)\r\n"
                + (closeAfter ? "connection: close\r\n" : "") + "\r\n" + body
        )
        if closeAfter {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(response)).whenComplete { _ in bound.value.close(promise: nil) }
        } else {
            context.writeAndFlush(wrapOutboundOut(response), promise: nil)
        }
    }

    // MARK: responses, app → peer

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let output = unwrapOutboundIn(data)
        guard !tunnel, output.readableBytes > 0 else {
            context.write(data, promise: promise)
            return
        }
        switch responses.feed(output) {
        case .failure(let error):
            // The app's answer cannot be framed: pass it on, and end the connection
            // after it (a later 403 could not be placed).
            logger.warning("HTTP response cannot be framed; closing after it", metadata: ["error": "\(error)"])
            context.write(data, promise: promise)
            closing = true
            context.flush()
            context.close(promise: nil)
        case .success(let pieces):
            // The write's promise goes with the last of its bytes handed on; bytes the
            // framer still holds (a head not yet complete) carry it to a later write.
            if let promise { heldPromises.append(promise) }
            let lastBytes = pieces.lastIndex { if case .end = $0 { false } else { true } }
            for (index, piece) in pieces.enumerated() {
                switch piece {
                case .head(let head, let bytes):
                    interimResponse = head.first.hasPrefix("1") && head.first != "101"
                    if head.first == "101" { tunnel = true }
                    if !interimResponse { flow?.httpResponse(status: Int(head.first) ?? 0, now: .now()) }
                    context.write(wrapOutboundOut(bytes), promise: index == lastBytes ? takeHeldPromise(context) : nil)
                case .body(let bytes):
                    context.write(wrapOutboundOut(bytes), promise: index == lastBytes ? takeHeldPromise(context) : nil)
                case .end:
                    if interimResponse {
                        interimResponse = false
                        continue
                    }
                    if case .forwarded = slots.first { slots.removeFirst() }
                    answerDenied(context: context)
                }
            }
        }
    }

    /// Promises of writes whose bytes the response framer still holds.
    private var heldPromises: [EventLoopPromise<Void>] = []

    func handlerRemoved(context: ChannelHandlerContext) {
        // The connection ended with a response half-framed: those bytes never go out.
        for promise in heldPromises { promise.fail(ChannelError.ioOnClosedChannel) }
        heldPromises = []
    }

    private func takeHeldPromise(_ context: ChannelHandlerContext) -> EventLoopPromise<Void>? {
        guard let first = heldPromises.first else { return nil }
        if heldPromises.count == 1 {
            heldPromises = []
            return first
        }
        let combined = context.eventLoop.makePromise(of: Void.self)
        for promise in heldPromises { combined.futureResult.cascade(to: promise) }
        heldPromises = []
        return combined
    }
}

@available(*, unavailable)
extension HTTPPolicyGate: Sendable {}
