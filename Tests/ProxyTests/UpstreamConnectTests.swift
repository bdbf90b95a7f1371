import NIOCore
import NIOPosix
import Testing

@testable import Proxy

/// `connect(literalOrName:port:)`: IP literals go straight to their socket address, names
/// through NIO's resolver, and both reach a real listener on loopback.
@Suite struct UpstreamConnectTests {
    let group = MultiThreadedEventLoopGroup.singleton

    @Test(
        "an IPv4 literal, an IPv6 literal and a name each reach the listener",
        arguments: ["127.0.0.1", "::1", "localhost"]
    )
    func reaches(host: String) async throws {
        let bindHost = host == "localhost" ? "127.0.0.1" : host
        let server = try await ServerBootstrap(group: group).bind(host: bindHost, port: 0).get()
        let port = try #require(server.localAddress?.port)
        let client = try await ClientBootstrap(group: group).connect(literalOrName: host, port: port).get()
        #expect(client.remoteAddress?.port == port)
        #expect(client.remoteAddress?.ipAddress == (host == "::1" ? "::1" : "127.0.0.1"))
        try await client.close()
        try await server.close()
    }

    @Test("a name that does not resolve fails the connect")
    func unresolvable() async throws {
        let connect = ClientBootstrap(group: group).connectTimeout(TimeAmount.seconds(Int64(2)))
            .connect(literalOrName: "no-such-host.invalid", port: 9)
        await #expect(throws: (any Error).self) { try await connect.get() }
    }
}
