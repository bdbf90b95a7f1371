import Foundation
import MeshAPI
import MeshNet
import MeshTestSupport
import Testing

@testable import Agent

/// Finding 6 of the node security review (c7e302b): an app stalled the whole agent
/// through its own sidecar. Idle connections filled the sidecar's admin API, and the
/// agent's `/flows` asked every sidecar one after the other on the event loop that also
/// runs the DHT, so `/live` took 5 s. Here one sidecar accepts `/flows` and never
/// answers (a python process on its admin socket), another answers: `/live` is
/// answered while `/flows` still waits, and `/flows` comes back within its deadline
/// with the answering sidecar's list. Needs root (the control socket's owner) and
/// python3.
@Suite struct AgentFlowsFanOutTests {
    /// A sidecar's admin socket: `stall` accepts, notes it in `accepted`, and says
    /// nothing; otherwise every GET gets a flow list with capacity 7.
    static let sidecar = """
        import http.server, socket, socketserver, sys, time
        path, mode, accepted = sys.argv[1], sys.argv[2], sys.argv[3]
        if mode == "stall":
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(path)
            server.listen(8)
            held = []
            while True:
                held.append(server.accept()[0])
                open(accepted, "w").write(str(len(held)))
        body = b'{"flows":[],"capacity":7,"evicted":0,"overruns":0,"recording":true}'
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def address_string(self):
                return "unix"
            def log_message(self, *arguments):
                pass
        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True
        Server(path, Handler).serve_forever()
        """

    @Test func aStalledSidecarDelaysNeitherLiveNorTheOtherSidecars() async throws {
        let directory = TemporaryDirectory()
        let stalled = directory.path + "/stalled.sock"
        let answering = directory.path + "/answering.sock"
        let accepted = directory.path + "/accepted"
        let sidecars = try [(stalled, "stall"), (answering, "answer")].map { path, mode in
            try ChildProcess.start(["python3", "-c", Self.sidecar, path, mode, accepted])
        }
        defer {
            for sidecar in sidecars {
                sidecar.signal(SIGKILL)
                sidecar.waitUntilExit()
            }
        }
        try await waitUntil("both sidecars listen") {
            [stalled, answering].allSatisfy { FileManager.default.fileExists(atPath: $0) }
        }
        // A deadline far longer than a busy machine takes to answer /live, so that the
        // order below is the agent's, not the scheduler's.
        let deadline = 5.0
        let agent = try AgentAccessTests.Agent(
            access: APIAccess(),
            sidecars: { [("shop/stalled", stalled), ("shop/answering", answering)] },
            sidecarDeadline: deadline
        )
        try agent.serveControl(group: 0)
        let socket = agent.socket

        let asked = ContinuousClock.now
        async let flows = blocking { () throws -> (FlowList, ContinuousClock.Instant) in
            let list = try AdminClient(endpoint: .unix(path: socket), timeout: 20).get("/flows", as: FlowList.self)
            return (list, ContinuousClock.now)
        }
        // The stalled sidecar holds the agent's request: now ask for /live.
        try await waitUntil("the agent asked the stalled sidecar") { FileManager.default.fileExists(atPath: accepted) }
        let live = try await blocking { () throws -> (Int, ContinuousClock.Instant) in
            let (status, _) = try AdminClient(endpoint: .unix(path: socket), timeout: 10).get("/live")
            return (status, ContinuousClock.now)
        }
        let (list, flowsAnswered) = try await flows
        #expect(live.0 == 200)
        #expect(live.1 < flowsAnswered, "/live waited for /flows")
        #expect(list.capacity == 7, "the answering sidecar's list is merged")
        #expect(
            flowsAnswered - asked < .seconds(deadline * 2),
            "one stalled sidecar costs its deadline (\(deadline) s), not more"
        )
    }
}
