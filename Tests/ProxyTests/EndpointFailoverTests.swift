import Foundation
import MeshTestSupport
import NIOCore
import NIOPosix
import Testing

@testable import Proxy

#if canImport(Glibc)
    import Glibc
#endif

/// A route whose first endpoint is a node that vanished: it takes the SYN and never
/// answers (a listener whose accept queue is full drops it, as a cut link would). The
/// client sidecar dials the next endpoint after `timeouts.nextEndpoint` instead of
/// waiting out `timeouts.connect`, and later connections try the silent one last.
@Suite struct EndpointFailoverTests {
    @Test func aSilentEndpointCostsOneStaggerThenGoesLast() async throws {
        let silent = try SilentListener()
        let app = try await TestApp.start { TestApp.Echo() }
        let port = app.localAddress!.port!
        // A stagger far above a handshake on a loaded machine, a connect timeout far
        // above the stagger, and an ejection that outlasts the test: which one a
        // connection waited for is beyond doubt.
        let pair = try await MeshPair(
            routes: [("orders.default", port)],
            allowedPorts: [port],
            clientTimeouts: ", connect: 20s, nextEndpoint: 2s, ejection: 30s",
            endpointsBefore: ["127.0.0.1:\(silent.port)"]
        )
        let route = pair.routePort()
        // The first connection starts at the silent endpoint (first in turn).
        let first = try await Self.timedRoundTrip(route, "one;")
        #expect(first.echo == "one;")
        #expect(
            first.seconds >= 1.9 && first.seconds < 15,
            "waited \(first.seconds) s: the stagger, not the connect timeout"
        )
        // The second starts at the healthy one; the third would start at the silent one
        // again, but it is ejected (for 30 s from the first's answer) and goes last.
        for round in 0..<2 {
            let later = try await Self.timedRoundTrip(route, "again \(round);")
            #expect(later.echo == "again \(round);")
            #expect(later.seconds < 1.5, "connection \(round + 2) waited \(later.seconds) s")
        }
        await pair.shutdown()
        try await app.close()
    }

    /// An endpoint that accepts and then resets the connection before any handshake:
    /// the next endpoint is dialled at once, without waiting for the stagger.
    @Test func anEndpointThatResetsGivesWayAtOnce() async throws {
        let resetting = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Resetter()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let app = try await TestApp.start { TestApp.Echo() }
        let port = app.localAddress!.port!
        let pair = try await MeshPair(
            routes: [("orders.default", port)],
            allowedPorts: [port],
            clientTimeouts: ", nextEndpoint: 30s",
            endpointsBefore: ["127.0.0.1:\(resetting.localAddress!.port!)"]
        )
        // Half the stagger: a slow build (AddressSanitizer, every suite at once) took
        // 2.8 s for a first connection that did not wait for it.
        let first = try await Self.timedRoundTrip(pair.routePort(), "one;")
        #expect(first.echo == "one;")
        #expect(first.seconds < 15, "waited \(first.seconds) s for an endpoint that had reset")
        await pair.shutdown()
        try await app.close()
        try await resetting.close()
    }

    static func timedRoundTrip(_ port: Int, _ text: String) async throws -> (echo: String, seconds: Double) {
        try await blocking {
            let started = ContinuousClock.now
            let socket = try BlockingSocket(port: port)
            let echo = try socket.roundTrip(text)
            let elapsed = ContinuousClock.now - started
            return (echo, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
        }
    }
}

/// Resets every connection as soon as it is accepted (SO_LINGER 0, then close).
final class Resetter: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        (channel as? any SocketOptionProvider)?.setSoLinger(linger(l_onoff: 1, l_linger: 0))
            .whenComplete { _ in channel.close(promise: nil) }
    }
}

/// A listener on 127.0.0.1 that never accepts and whose accept queue is full, so that
/// the kernel drops every further SYN: a connect to it neither succeeds nor fails
/// until its own timeout, like a connect to a node that vanished.
final class SilentListener {
    let port: Int
    private let listener: Int32
    private let filler: Int32

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) }
        }
        guard bound == 0, listen(listener, 0) == 0 else { throw SilentListenerError() }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        // A backlog of 0 holds one connection: fill it, and the queue is full.
        let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, length) }
        }
        guard connected == 0 else { throw SilentListenerError() }
        self.listener = listener
        self.filler = filler
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit {
        close(filler)
        close(listener)
    }

    struct SilentListenerError: Error {}
}
