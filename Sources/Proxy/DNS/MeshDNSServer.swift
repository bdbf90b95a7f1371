import Kademlia
import Logging
import MeshConfiguration
import MeshNet
import Metrics
import NIOCore
import NIOPosix

#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Mesh DNS on UDP and TCP (`dns.listen`, conventionally `127.0.0.1:15053`; capture
/// redirects the app's port-53 traffic here):
///
/// - `<service>.<namespace>.<suffix>` A/AAAA: the service's virtual IP, when the DHT
///   knows an endpoint of it (NXDOMAIN when it knows none; SERVFAIL when the agent
///   cannot be asked); other types of a known service: an empty answer (NODATA);
/// - every other name: forwarded as is over UDP to the upstream resolvers in turn
///   (`dns.upstreams`, by default those of resolv.conf), the first answer relayed back;
/// - a malformed query: FORMERR when its header can be read, otherwise dropped; counted
///   by reason in `beemesh_dns_rejected_total`.
final class MeshDNSServer: Sendable {
    private let discovery: MeshDiscovery
    private let configuration: ProxyConfiguration.DNS
    private let upstreams: [SocketAddress]
    private let logger: Logger
    /// An upstream's answer is awaited this long before the next one is asked.
    static let upstreamTimeout: TimeAmount = .milliseconds(2000)

    /// The values of `beemesh_dns_queries_total`'s `result`.
    static let results = ["mesh", "nxdomain", "forwarded", "servfail"]

    private let metrics: ProxyMetrics

    init(discovery: MeshDiscovery, configuration: ProxyConfiguration.DNS, metrics: ProxyMetrics, logger: Logger) {
        self.metrics = metrics
        self.discovery = discovery
        self.configuration = configuration
        self.logger = logger
        let configured =
            configuration.upstreams.isEmpty
            ? Self.nameservers(resolvConf: configuration.resolvConf) : configuration.upstreams
        upstreams = configured.compactMap { try? SocketAddress(ipAddress: $0.host, port: $0.port) }
    }

    /// The `nameserver` lines of a resolv.conf (port 53), loopback stub resolvers
    /// included; an unreadable file gives none.
    static func nameservers(resolvConf path: String) -> [HostPort] {
        guard let text = try? SystemFile.read(path, limit: 1 << 20) else { return [] }
        return text.split(whereSeparator: \.isNewline).compactMap { line in
            let fields = line.split(whereSeparator: \.isWhitespace)
            guard fields.count >= 2, fields[0] == "nameserver" else { return nil }
            return HostPort(host: String(fields[1]), port: 53)
        }
    }

    /// Binds UDP and TCP on every address; returns the bound UDP addresses.
    func start(group: any EventLoopGroup, listen: [HostPort]) async throws -> [any Channel] {
        var channels: [any Channel] = []
        for address in listen {
            let udp = try await DatagramBootstrap(group: group)
                .channelOption(.socketOption(.so_reuseaddr), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(DNSDatagramHandler(server: self))
                    }
                }
                .bind(host: address.host, port: address.port).get()
            // TCP on the same port as UDP (port 0: the one UDP got).
            let port = udp.localAddress?.port ?? address.port
            let tcp = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers(
                            ByteToMessageHandler(DNSStreamFrameDecoder()),
                            DNSStreamHandler(server: self)
                        )
                    }
                }
                .bind(host: address.host, port: port).get()
            channels += [udp, tcp]
            logger.info(
                "mesh DNS up",
                metadata: ["address": "\(udp.localAddress!)", "suffix": "\(configuration.suffix)"]
            )
        }
        return channels
    }

    /// The answer to one query message (nil: nothing to send back).
    func answer(_ message: [UInt8], on loop: any EventLoop) -> EventLoopFuture<[UInt8]?> {
        let query: DNSQuery
        do {
            query = try DNSQuery(parsing: message)
        } catch {
            metrics.dnsRejected(error.code)
            logger.debug("DNS query refused", metadata: ["error": "\(error)"])
            return loop.makeSucceededFuture(DNSQuery.formatError(for: message))
        }
        let suffix = "." + configuration.suffix
        guard query.name.hasSuffix(suffix) else { return forward(message, on: loop) }
        let service = String(query.name.dropLast(suffix.count))
        // NAME.NAMESPACE, or leader.NAME.NAMESPACE: a StatefulSet's leading pod.
        guard ServiceRecord.parse(meshName: service) != nil else {
            count("nxdomain")
            return loop.makeSucceededFuture(query.answer(addresses: [], ttl: 0, rcode: 3))
        }
        let ttl = configuration.ttl
        return discovery.resolve(service, on: loop).map { resolution -> [UInt8]? in
            guard !resolution.endpoints.isEmpty else {
                self.count("nxdomain")
                return query.answer(addresses: [], ttl: ttl, rcode: 3)
            }
            self.count("mesh")
            let (v4, v6) = self.discovery.virtualAddresses(for: service)
            switch query.type {
            case DNSQuery.typeA: return query.answer(addresses: [v4], ttl: ttl)
            case DNSQuery.typeAAAA: return query.answer(addresses: [v6], ttl: ttl)
            default: return query.answer(addresses: [], ttl: ttl)
            }
        }.recover { _ in
            self.count("servfail")
            return query.answer(addresses: [], ttl: 0, rcode: 2)
        }
    }

    private func count(_ result: String) {
        metrics.dnsQuery(result)
    }

    /// Asks the upstreams in turn over UDP; SERVFAIL when none answers.
    private func forward(_ message: [UInt8], on loop: any EventLoop) -> EventLoopFuture<[UInt8]?> {
        forward(message, to: upstreams[...], on: loop)
    }

    private func forward(
        _ message: [UInt8],
        to remaining: ArraySlice<SocketAddress>,
        on loop: any EventLoop
    ) -> EventLoopFuture<[UInt8]?> {
        guard let upstream = remaining.first else {
            count("servfail")
            let failure = DNSQuery.formatError(for: message).map { header -> [UInt8] in
                var answer = header
                answer[3] = 0x02  // SERVFAIL
                return answer
            }
            return loop.makeSucceededFuture(failure)
        }
        return UpstreamExchange.ask(upstream, message, timeout: Self.upstreamTimeout, on: loop)
            .map { answer -> [UInt8]? in
                self.count("forwarded")
                return answer
            }
            .flatMapError { error in
                self.logger.debug(
                    "upstream resolver failed",
                    metadata: ["upstream": "\(upstream)", "error": "\(error)"]
                )
                return self.forward(message, to: remaining.dropFirst(), on: loop)
            }
    }
}

/// One forwarded query: a connected UDP socket, the query out, the first answer with the
/// same ID back, or a timeout.
private enum UpstreamExchange {
    struct Timeout: Error {}

    static func ask(
        _ upstream: SocketAddress,
        _ message: [UInt8],
        timeout: TimeAmount,
        on loop: any EventLoop
    ) -> EventLoopFuture<[UInt8]> {
        let answer = loop.makePromise(of: [UInt8].self)
        let id = Array(message.prefix(2))
        let channel = DatagramBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AnswerHandler(id: id, answer: answer))
                }
            }
            .connect(to: upstream)
        channel.whenSuccess { channel in
            var buffer = channel.allocator.buffer(capacity: message.count)
            buffer.writeBytes(message)
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: upstream, data: buffer)).cascadeFailure(to: answer)
            let timer = loop.scheduleTask(in: timeout) { answer.fail(Timeout()) }
            answer.futureResult.whenComplete { _ in
                timer.cancel()
                channel.close(promise: nil)
            }
        }
        channel.whenFailure { answer.fail($0) }
        return answer.futureResult
    }

    private final class AnswerHandler: ChannelInboundHandler {
        typealias InboundIn = AddressedEnvelope<ByteBuffer>
        let id: [UInt8]
        let answer: EventLoopPromise<[UInt8]>

        init(id: [UInt8], answer: EventLoopPromise<[UInt8]>) {
            self.id = id
            self.answer = answer
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var envelope = unwrapInboundIn(data)
            let bytes = envelope.data.readBytes(length: envelope.data.readableBytes) ?? []
            guard bytes.count >= 12, Array(bytes.prefix(2)) == id else { return }  // not ours
            answer.succeed(bytes)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            answer.fail(error)  // e.g. ICMP port unreachable on a connected socket
        }
    }
}

/// DNS over UDP: one datagram, one answer to its sender.
private final class DNSDatagramHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let server: MeshDNSServer

    init(server: MeshDNSServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var envelope = unwrapInboundIn(data)
        let query = envelope.data.readBytes(length: envelope.data.readableBytes) ?? []
        let sender = envelope.remoteAddress
        let channel = context.channel
        server.answer(query, on: context.eventLoop).whenSuccess { answer in
            guard let answer else { return }
            var buffer = channel.allocator.buffer(capacity: answer.count)
            buffer.writeBytes(answer)
            channel.writeAndFlush(AddressedEnvelope(remoteAddress: sender, data: buffer), promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A client gone (ICMP unreachable) must not close the listener.
    }
}

/// DNS over TCP: messages with a two-byte length prefix (RFC 1035 4.2.2).
private struct DNSStreamFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = [UInt8]

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
            buffer.readableBytes >= 2 + Int(length)
        else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(wrapInboundOut(buffer.readBytes(length: Int(length)) ?? []))
        return .continue
    }
}

private final class DNSStreamHandler: ChannelInboundHandler {
    typealias InboundIn = [UInt8]
    typealias OutboundOut = ByteBuffer

    private let server: MeshDNSServer

    init(server: MeshDNSServer) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let channel = context.channel
        server.answer(unwrapInboundIn(data), on: context.eventLoop).whenSuccess { answer in
            guard let answer else {
                channel.close(promise: nil)
                return
            }
            var buffer = channel.allocator.buffer(capacity: answer.count + 2)
            buffer.writeInteger(UInt16(answer.count))
            buffer.writeBytes(answer)
            channel.writeAndFlush(buffer, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
