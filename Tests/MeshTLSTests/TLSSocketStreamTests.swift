import Foundation
import MeshIdentity
import MeshTLS
import NIOCore
import NIOEmbedded
import Testing

/// An established session detached from its handler onto a socket (as the proxy's
/// direct relay does), driven call by call on a non-blocking socketpair: what it reads,
/// when it says the socket is drained, and how each kind of end is reported.
@Suite struct TLSSocketStreamTests {
    let harness = try! TLSHarness()

    /// Two handlers that complete a handshake in memory, then leave their channels for
    /// the two ends of a socketpair.
    func detachedPair() throws -> (client: TLSSocketStream, server: TLSSocketStream, fds: [CInt]) {
        let server = EmbeddedChannel(
            handler: MeshTLSHandler(
                context: try TLSContext(credentials: try harness.credentials("orders")),
                expectedPeer: nil,
                logger: TLSHarness.logger
            )
        )
        let client = EmbeddedChannel(
            handler: MeshTLSHandler(
                context: try TLSContext(credentials: try harness.credentials("frontend")),
                expectedPeer: harness.id("orders"),
                logger: TLSHarness.logger
            )
        )
        server.pipeline.fireChannelActive()
        client.pipeline.fireChannelActive()
        for _ in 0..<10 {
            var moved = false
            while let bytes = try client.readOutbound(as: ByteBuffer.self) {
                try server.writeInbound(bytes)
                moved = true
            }
            while let bytes = try server.readOutbound(as: ByteBuffer.self) {
                try client.writeInbound(bytes)
                moved = true
            }
            if !moved { break }
        }
        var fds: [CInt] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        for fd in fds { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        func detach(_ channel: EmbeddedChannel, onto fd: CInt) throws -> TLSSocketStream {
            let context = try channel.pipeline.syncOperations.context(handlerType: MeshTLSHandler.self)
            let handler = context.handler as! MeshTLSHandler
            #expect(handler.isDetachable, "the handshake completed and nothing is in flight")
            return try #require(handler.detach(socket: fd, context: context))
        }
        return (try detach(client, onto: fds[0]), try detach(server, onto: fds[1]), fds)
    }

    func write(_ text: String, to stream: TLSSocketStream) {
        let step = Array(text.utf8).withUnsafeBytes { stream.write($0) }
        #expect(step == .bytes(text.utf8.count))
    }

    func read(_ count: Int, from stream: TLSSocketStream) -> (TLSSocketStream.Step, String) {
        var buffer = [UInt8](repeating: 0, count: count)
        let step = buffer.withUnsafeMutableBytes { stream.read(into: $0) }
        guard case .bytes(let n) = step else { return (step, "") }
        return (step, String(decoding: buffer[..<n], as: UTF8.self))
    }

    /// A read served from OpenSSL's buffer alone never says "drained": bytes that reached
    /// the socket since its last read would otherwise wait for an edge that already came.
    @Test func drainedOnlyWhenThisReadFoundTheSocketEmpty() throws {
        let (client, server, fds) = try detachedPair()
        defer { for fd in fds { close(fd) } }
        write("one", to: client)
        write("two", to: client)
        // One socket read takes both records; the second stays inside OpenSSL.
        #expect(read(3, from: server).1 == "one")
        #expect(!server.isDrained, "a whole record is still buffered")
        write("three", to: client)
        #expect(read(3, from: server).1 == "two")
        #expect(!server.isDrained, "'three' is in the socket: this read did not look")
        #expect(read(64, from: server).1 == "three")
        #expect(server.isDrained)
        #expect(read(64, from: server).0 == .wouldBlock)
    }

    /// close_notify is a clean end (and the other direction goes on); a socket closed
    /// without it is a truncation, reported after the bytes that came before it.
    @Test func closeNotifyEndsCleanlyAndABareCloseIsATruncation() throws {
        let (client, server, fds) = try detachedPair()
        defer { close(fds[1]) }
        #expect(client.closeOutput() == .bytes(0))
        #expect(read(64, from: server).0 == .closed)
        write("last", to: server)
        write("words", to: server)
        #expect(read(64, from: client).1 == "lastwords")
        close(fds[0])
        _ = client
        let step = Array("lost".utf8).withUnsafeBytes { server.write($0) }
        #expect(step == .reset, "a peer that closed its socket resets a write")
        let (client2, server2, fds2) = try detachedPair()
        defer { close(fds2[0]) }
        write("partial", to: server2)
        close(fds2[1])
        #expect(read(64, from: client2).1 == "partial")
        #expect(read(64, from: client2).0 == .truncated)
        _ = server2
    }
}
