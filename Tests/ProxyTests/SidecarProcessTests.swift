import Foundation
import MeshNet
import MeshTestSupport
import Testing

/// The `beemesh-proxy` executable itself: SIGTERM stops new connections, lets a live
/// one finish, and the process exits 0 once it has.
@Suite(.serialized) struct SidecarProcessTests {
    /// `beemesh-proxy` sits next to the test bundle in the build directory.
    private var executable: String {
        let bundle = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        return bundle.appendingPathComponent("beemesh-proxy").path
    }

    /// A loopback port that was free a moment ago.
    private func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7F00_0001).bigEndian)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    @Test func sigtermDrainsThenExitsZero() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: executable), "build beemesh-proxy first: \(executable)")
        let app = try await TestApp.start { TestApp.Echo() }
        let appPort = app.localAddress!.port!
        let pair = try await MeshPair(routes: [], allowedPorts: [appPort])
        let routePort = try freePort()
        let directory = TemporaryDirectory()
        let config = directory.path + "/client.yaml"
        let frontend = pair.directory + "/frontend"
        try """
        identity: {certificate: \(frontend)/cert.pem, privateKey: \(frontend)/key.pem, trustBundle: \(frontend)/bundle.pem}
        inbound: {listen: 127.0.0.1:0}
        admin: {listen: 127.0.0.1:0, socket: off}
        metrics: {listen: off}
        timeouts: {drain: 10s}
        logLevel: warning
        routes:
          - listen: 127.0.0.1:\(routePort)
            service: orders.default
            port: \(appPort)
            endpoints: [{address: 127.0.0.1:\(pair.serverAddresses.inbound.port!), identity: spiffe://example.org/ns/default/sa/orders}]
        """.write(toFile: config, atomically: true, encoding: .utf8)

        let process = try ChildProcess.start([executable, "run", "--config", config])
        defer { if process.isRunning { process.terminate() } }

        let outcome = try await blocking { () throws -> (String, Bool, String, Bool, Double) in
            var live: BlockingSocket?
            for _ in 0..<200 where live == nil {
                live = try? BlockingSocket(port: routePort)
                if live == nil { Thread.sleep(forTimeInterval: 0.05) }
            }
            guard let live else { throw SocketError("sidecar never listened on \(routePort)") }
            let first = try live.roundTrip("one;")

            process.terminate()
            Thread.sleep(forTimeInterval: 0.5)
            let refused = (try? BlockingSocket(port: routePort)) == nil
            let second = try live.roundTrip("two;")
            let stillRunning = process.isRunning
            let closed = Date()
            live.shutdownWrite()
            _ = try live.receiveAll()
            while process.isRunning, Date().timeIntervalSince(closed) < 8 { Thread.sleep(forTimeInterval: 0.02) }
            return (first, refused, second, stillRunning, Date().timeIntervalSince(closed))
        }
        #expect(outcome.0 == "one;")
        #expect(outcome.1, "new connections are refused while draining")
        #expect(outcome.2 == "two;", "the live connection keeps working while draining")
        #expect(outcome.3, "the sidecar waits for the live connection")
        #expect(outcome.4 < 3, "exits soon after the last connection closed")
        #expect(!process.isRunning)
        if !process.isRunning {
            #expect(process.exitStatus == 0)
        }
        await pair.shutdown()
        try await app.close()
    }
}
