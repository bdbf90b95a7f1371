import COpenSSL
import Foundation
import MeshConfiguration
import MeshTestSupport
import NIOConcurrencyHelpers
import NIOCore
import Proxy
import Testing

/// The sidecar pair end to end on loopback: app → client sidecar → mTLS → server
/// sidecar → app, with real sockets and real OpenSSL. The "app client" side uses
/// blocking sockets on threads of their own (see `blocking`).
@Suite(.serialized) struct ProxyPairTests {
    init() { raiseOpenFileLimit() }

    /// The one connection went through `engine` on both sidecars: one that cannot move
    /// to a direct loop stays on the channel relay silently.
    private func expectRelayed(
        by engine: RelayEngine,
        _ pair: MeshPair,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(
            (pair.client.directRelaysAdopted, pair.server.directRelaysAdopted) == (engine == .direct ? (1, 1) : (0, 0)),
            sourceLocation: sourceLocation
        )
    }

    private func echoPair(engine: RelayEngine = .direct) async throws -> (app: any Channel, pair: MeshPair) {
        try await MeshPair.serving({ TestApp.Echo() }, engine: engine)
    }

    /// 256 MiB of random bytes out and back through the pair: the SHA-256 of what was
    /// sent equals that of what came back. Both relay engines.
    @Test(arguments: RelayEngine.allCases)
    func relays256MiBBothWaysByteExact(engine: RelayEngine) async throws {
        let (app, pair) = try await echoPair(engine: engine)
        let port = pair.routePort()
        let total = 256 << 20
        let (count, sent, received) = try await blocking {
            let socket = try BlockingSocket(port: port, timeoutSeconds: 120)
            let sent = SHA256Digest()
            let writer = Thread {
                var generator = SplitMix64(seed: 42)
                var chunk = [UInt8](repeating: 0, count: 1 << 20)
                for _ in 0..<(total / chunk.count) {
                    chunk.withUnsafeMutableBytes { bytes in
                        let words = bytes.bindMemory(to: UInt64.self)
                        for index in words.indices { words[index] = generator.next() }
                    }
                    chunk.withUnsafeBytes { sent.update($0) }
                    try? chunk.withUnsafeBytes { try socket.send($0) }
                }
                socket.shutdownWrite()
            }
            writer.start()
            let received = SHA256Digest()
            var count = 0
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            while true {
                let n = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }
                if n == 0 { break }
                buffer.withUnsafeBytes { received.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                count += n
            }
            while !writer.isFinished { Thread.sleep(forTimeInterval: 0.01) }
            return (count, sent.finish(), received.finish())
        }
        #expect(count == total)
        #expect(received == sent)
        expectRelayed(by: engine, pair)
        await pair.shutdown()
        try await app.close()
    }

    /// The client shuts its write side after the request; the app answers only after it
    /// sees end of input, and the client still receives the whole answer. Both engines.
    @Test(arguments: RelayEngine.allCases)
    func halfCloseCarriedEndToEnd(engine: RelayEngine) async throws {
        let app = try await TestApp.start { TestApp.ReadAllThenReply() }
        let pair = try await MeshPair(
            routes: [("orders.default", app.localAddress!.port!)],
            allowedPorts: [app.localAddress!.port!],
            engine: engine
        )
        let port = pair.routePort()
        let reply = try await blocking {
            let socket = try BlockingSocket(port: port)
            try socket.send(String(repeating: "x", count: 300_000))
            socket.shutdownWrite()
            // A slow reader: the app has written and closed long before we read.
            Thread.sleep(forTimeInterval: 0.5)
            return try socket.receiveAll(limit: 64 << 20)
        }
        #expect(String(decoding: reply.prefix(40), as: UTF8.self).hasPrefix("received 300000 bytes\n"))
        #expect(reply.count == "received 300000 bytes\n".utf8.count + TestApp.replyPadding)
        expectRelayed(by: engine, pair)
        await pair.shutdown()
        try await app.close()
    }

    /// An opaque connection leaves SwiftNIO for a direct relay loop on both sidecars (with
    /// `relayEngine: channel` it stays), and when it ends its relays end and its live
    /// flow is released, so a later policy change or drain does not see it.
    @Test(arguments: RelayEngine.allCases)
    func anOpaqueConnectionMovesToTheDirectRelayAndLeavesNothingBehind(engine: RelayEngine) async throws {
        let (app, pair) = try await echoPair(engine: engine)
        let port = pair.routePort()
        let socket = try await blocking { try BlockingSocket(port: port) }
        #expect(try await blocking { try socket.roundTrip("hello;") } == "hello;")
        let expected = engine == .direct ? 1 : 0
        #expect(pair.client.directRelayCount == expected)
        #expect(pair.server.directRelayCount == expected)
        #expect(pair.server.liveFlowCount == 1)
        socket.shutdownWrite()
        #expect(try await blocking { try socket.receiveAll() }.isEmpty)
        let deadline = ContinuousClock.now + .seconds(5)
        let left = { [pair] in
            pair.server.liveFlowCount + pair.server.directRelayCount + pair.client.directRelayCount
                + pair.server.directRelaysInMemory + pair.client.directRelaysInMemory
        }
        while left() > 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(pair.server.liveFlowCount == 0)
        #expect(pair.server.directRelayCount == 0 && pair.client.directRelayCount == 0)
        // Freed, not only ended (a relay and its cut once held each other).
        #expect(pair.server.directRelaysInMemory == 0 && pair.client.directRelaysInMemory == 0)
        await pair.shutdown()
        try await app.close()
    }

    /// 1,000 connections open at once through the pair, each with its own message.
    @Test func thousandConcurrentConnections() async throws {
        let (app, pair) = try await echoPair()
        let port = pair.routePort()
        let holder = NIOLockedValueBox<[BlockingSocket]>([])
        let echoed = try await blocking {
            var sockets: [BlockingSocket] = []
            for _ in 0..<1000 { sockets.append(try BlockingSocket(port: port)) }
            for (index, socket) in sockets.enumerated() {
                try socket.send(String(format: "connection-%04d;", index))
            }
            var echoed = 0
            for (index, socket) in sockets.enumerated() {
                let reply = try socket.receive(exactly: 16)
                if String(decoding: reply, as: UTF8.self) == String(format: "connection-%04d;", index) { echoed += 1 }
            }
            holder.withLockedValue { $0 = sockets }
            return echoed
        }
        #expect(echoed == 1000)
        #expect(pair.client.activeConnections == 1000)
        #expect(pair.server.activeConnections == 1000)
        holder.withLockedValue { $0 = [] }
        await pair.shutdown()
        try await app.close()
    }

    /// New certificates on both sides, many times, while connections keep being made and
    /// one long connection stays open: not one connection fails.
    @Test func certificateRotationUnderLoad() async throws {
        let (app, pair) = try await echoPair()
        let port = pair.routePort()
        let longLived = try await blocking { try BlockingSocket(port: port) }
        #expect(try await blocking { try longLived.roundTrip("before;") } == "before;")

        let stop = NIOLockedValueBox(false)
        let tally = NIOLockedValueBox((ok: 0, failed: [String]()))
        let load = (0..<4).map { worker in
            Task {
                try await blocking {
                    var round = 0
                    while !stop.withLockedValue({ $0 }) {
                        round += 1
                        let message = "w\(worker)r\(round);"
                        do {
                            let reply = try BlockingSocket(port: port, timeoutSeconds: 10).roundTrip(message)
                            guard reply == message else { throw SocketError("bad echo '\(reply)'") }
                            tally.withLockedValue { $0.ok += 1 }
                        } catch {
                            tally.withLockedValue { $0.failed.append("\(error)") }
                        }
                    }
                }
            }
        }
        var serials: Set<String> = [pair.server.credentials.current.credentials.leaf.serialNumber]
        for _ in 0..<8 {
            try await Task.sleep(for: .milliseconds(250))
            try pair.rotate()
            #expect(pair.server.credentials.reloadIfChanged())
            #expect(pair.client.credentials.reloadIfChanged())
            serials.insert(pair.server.credentials.current.credentials.leaf.serialNumber)
        }
        try await Task.sleep(for: .milliseconds(250))
        stop.withLockedValue { $0 = true }
        for task in load { try await task.value }

        #expect(try await blocking { try longLived.roundTrip("after;") } == "after;")
        let (ok, failed) = tally.withLockedValue { ($0.ok, $0.failed) }
        #expect(serials.count == 9)
        #expect(ok > 100, "only \(ok) connections completed")
        #expect(failed.isEmpty, "\(failed.count) failed: \(failed.prefix(3))")
        await pair.shutdown()
        try await app.close()
    }

    /// A relayed connection with no bytes either way for `timeouts.idle` is closed on
    /// both sides; one that keeps talking is not.
    @Test func idleTimeoutClosesSilentConnections() async throws {
        let app = try await TestApp.start { TestApp.Echo() }
        let port = app.localAddress!.port!
        let pair = try await MeshPair(routes: [("orders.default", port)], allowedPorts: [port], idle: "500ms")
        let routePort = pair.routePort()
        let (chatty, silentTail) = try await blocking {
            let silent = try BlockingSocket(port: routePort)
            let chatty = try BlockingSocket(port: routePort)
            var echoed = 0
            for _ in 0..<6 {
                echoed += try chatty.roundTrip("tick;").utf8.count
                Thread.sleep(forTimeInterval: 0.2)
            }
            // 1.2 s have passed: the silent one was closed, the chatty one still works.
            let tail = try silent.receiveAll()
            echoed += try chatty.roundTrip("last;").utf8.count
            return (echoed, tail)
        }
        #expect(chatty == 35)
        #expect(silentTail.isEmpty)
        await pair.shutdown()
        try await app.close()
    }

    /// A port the server does not expose: the server answers "denied" and the app never
    /// sees a connection; the client's connection is closed without a byte.
    @Test func deniedPrefaceReachesNoApp() async throws {
        let accepted = NIOLockedValueBox(0)
        let app = try await TestApp.start(accepted: accepted) { TestApp.Echo() }
        let pair = try await MeshPair(routes: [("orders.default", app.localAddress!.port!)], allowedPorts: [1])
        let port = pair.routePort()
        let reply = try await blocking {
            let socket = try BlockingSocket(port: port)
            try? socket.send("hello")
            // Closed without a byte: a FIN, or a reset because "hello" was never read.
            return (try? socket.receiveAll()) ?? []
        }
        #expect(reply.isEmpty)
        #expect(accepted.withLockedValue { $0 } == 0)
        await pair.shutdown()
        try await app.close()
    }

    /// Shutdown stops new connections at once, lets a live one finish, and returns as
    /// soon as it closed.
    @Test func gracefulDrain() async throws {
        let (app, pair) = try await echoPair()
        let port = pair.routePort()
        let live = try await blocking { try BlockingSocket(port: port) }
        #expect(try await blocking { try live.roundTrip("one;") } == "one;")

        let started = ContinuousClock.now
        let draining = Task { await pair.client.shutdown(drain: 10) }
        // The listener closes at once: new connections are refused while the old drain.
        try await waitUntil("the route listener refuses", seconds: 5) { (try? BlockingSocket(port: port)) == nil }
        let (echo, tail) = try await blocking {
            let echo = try live.roundTrip("two;")
            live.shutdownWrite()
            return (echo, try live.receiveAll())
        }
        #expect(echo == "two;")
        #expect(tail.isEmpty)
        await draining.value
        #expect(ContinuousClock.now - started < .seconds(5))
        await pair.server.shutdown(drain: 0)
        try await app.close()
    }
}

/// Incremental SHA-256 through OpenSSL's EVP interface.
final class SHA256Digest: @unchecked Sendable {
    // Guarded by `lock`.
    private let context = EVP_MD_CTX_new()!
    private let lock = NIOLock()

    init() { EVP_DigestInit_ex(context, EVP_sha256(), nil) }

    func update(_ bytes: UnsafeRawBufferPointer) {
        lock.withLock { _ = EVP_DigestUpdate(context, bytes.baseAddress, bytes.count) }
    }

    func finish() -> [UInt8] {
        lock.withLock {
            var digest = [UInt8](repeating: 0, count: 32)
            var length: UInt32 = 0
            EVP_DigestFinal_ex(context, &digest, &length)
            return digest
        }
    }

    deinit { EVP_MD_CTX_free(context) }
}

/// What the server side refuses to expose, whatever the client asks.
@Suite(.serialized) struct InboundExposureTests {
    /// A preface naming one of the proxy's own listeners is denied even when the port is
    /// listed: a peer must not reach the route listeners and borrow this identity.
    @Test func ownListenerPortsAreNeverAppPorts() async throws {
        let app = try await TestApp.start { TestApp.Echo() }
        let appPort = app.localAddress!.port!
        let first = try await MeshPair(routes: [], allowedPorts: [appPort])
        let inboundPort = first.serverAddresses.inbound.port!
        await first.shutdown()
        // Listing the server's own (now known) inbound port does not make it reachable.
        let pair = try await MeshPair(
            routes: [("orders.default", inboundPort)],
            allowedPorts: [appPort, inboundPort],
            serverInboundPort: inboundPort
        )
        let port = pair.routePort()
        let reply = try await blocking {
            let socket = try BlockingSocket(port: port)
            try? socket.send("hello")
            return (try? socket.receiveAll()) ?? []
        }
        #expect(reply.isEmpty)
        await pair.shutdown()
        try await app.close()
    }
}
