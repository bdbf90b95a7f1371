import Foundation
import MeshAPI

/// podman's REST API (libpod, versioned paths) over its unix socket. Blocking: the
/// reconciler calls it from its own thread, never from an event loop.
///
/// Only what the agent needs: pods and containers created from spec JSON, started,
/// stopped, inspected, listed by label, removed, and container logs.
struct PodmanClient: Sendable {
    static let apiVersion = "v4.0.0"
    let socket: String
    private let client: AdminClient

    init(socket: String, timeout: Double = 120) {
        self.socket = socket
        self.client = AdminClient(endpoint: .unix(path: socket), timeout: timeout)
    }

    private func path(_ tail: String) -> String { "/\(Self.apiVersion)/libpod\(tail)" }

    /// Whether the service answers `_ping`.
    func ping() -> Bool {
        guard let (status, _) = try? AdminClient(endpoint: .unix(path: socket), timeout: 2).get(path("/_ping")) else {
            return false
        }
        return status == 200
    }

    // MARK: pods

    struct PodSpec: Encodable {
        var name: String
        var labels: [String: String]
        var hostname: String
        /// The pod's resolver: mesh DNS captures whatever it is, as long as it is not loopback.
        var dns_server: [String]?
        /// Host ports forwarded to the pod (podman's port mapping: the network's
        /// `portmap`, which also holds the port open on the host so nothing else binds it).
        var portmappings: [PortMapping]?
    }

    struct PortMapping: Encodable {
        /// Empty: every address of the host.
        var host_ip: String
        var host_port: UInt16
        var container_port: UInt16
        var `protocol` = "tcp"
    }

    func createPod(_ spec: PodSpec) throws(PodmanError) {
        try call("POST", "/pods/create", body: spec, expecting: [201, 200])
    }

    func startPod(_ name: String) throws(PodmanError) {
        try call("POST", "/pods/\(name)/start", expecting: [200, 304])
    }

    func removePod(_ name: String) throws(PodmanError) {
        try call("DELETE", "/pods/\(name)?force=true", expecting: [200, 404])
    }

    struct PodInspect: Decodable {
        struct Member: Decodable {
            var Id: String
            var Name: String
            var State: String
        }
        var Name: String
        var InfraContainerID: String?
        var Labels: [String: String]?
        var Containers: [Member]?
    }

    func inspectPod(_ name: String) throws(PodmanError) -> PodInspect? {
        try decode("/pods/\(name)/json", as: PodInspect.self)
    }

    struct PodSummary: Decodable {
        var Name: String
        var Status: String
        var Created: String?
        var Labels: [String: String]?

        /// `Created` (RFC 3339 with nanoseconds) as a date.
        var createdDate: Date? {
            guard let Created else { return nil }
            let trimmed = Created.replacingOccurrences(of: #"\.\d+"#, with: "", options: .regularExpression)
            return ISO8601DateFormatter().date(from: trimmed)
        }
    }

    /// Pods carrying `label` (`key=value`).
    func listPods(label: String) throws(PodmanError) -> [PodSummary] {
        let filter = "{\"label\":[\"\(label)\"]}".addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? ""
        return try decode("/pods/json?filters=\(filter)", as: [PodSummary].self) ?? []
    }

    // MARK: containers

    struct Mount: Encodable {
        var destination: String
        var source: String
        var type = "bind"
        var options: [String]
    }

    struct ContainerSpec: Encodable {
        var name: String
        var pod: String
        var image: String
        var command: [String]?
        var entrypoint: [String]?
        var env: [String: String]
        var user: String?
        var labels: [String: String]
        var mounts: [Mount]
        var work_dir: String?
        var stop_timeout: UInt?
        /// A minimal init (catatonit) as PID 1 that forwards signals: a shell or an
        /// httpd as PID 1 would ignore SIGTERM and wait out the stop timeout.
        var `init`: Bool?
        /// Capabilities removed from podman's default set (`CAP_…`).
        var cap_drop: [String]? = nil
        /// No process of the container gains privileges (setuid binaries, file caps).
        var no_new_privileges: Bool? = nil
        /// Resource limits (`nofile`, …), over containers.conf's defaults.
        var r_limits: [ResourceLimit]? = nil
    }

    struct ResourceLimit: Encodable {
        var type: String
        var hard: UInt64
        var soft: UInt64
    }

    func createContainer(_ spec: ContainerSpec) throws(PodmanError) {
        try call("POST", "/containers/create", body: spec, expecting: [201, 200])
    }

    func startContainer(_ name: String) throws(PodmanError) {
        try call("POST", "/containers/\(name)/start", expecting: [204, 304])
    }

    func stopContainer(_ name: String, timeout: Int) throws(PodmanError) {
        try call("POST", "/containers/\(name)/stop?timeout=\(timeout)", expecting: [204, 304, 404])
    }

    struct ContainerInspect: Decodable {
        struct State: Decodable {
            var Status: String
            var Running: Bool
            var Pid: Int
            var ExitCode: Int
            var StartedAt: String?
            var FinishedAt: String?
        }
        struct Network: Decodable {
            struct Binding: Decodable {
                var HostIp: String?
                var HostPort: String?
            }
            var IPAddress: String?
            var SandboxKey: String?
            /// `"15008/tcp"` → the host addresses and ports forwarded to it.
            var Ports: [String: [Binding]?]?
        }
        var Name: String
        var State: State
        var NetworkSettings: Network?
        var ImageName: String?
    }

    struct ImageInspect: Decodable {
        struct Config: Decodable {
            var User: String?
        }
        var Config: Config?
    }

    func inspectImage(_ name: String) throws(PodmanError) -> ImageInspect? {
        try decode("/images/\(name)/json", as: ImageInspect.self)
    }

    func inspectContainer(_ name: String) throws(PodmanError) -> ContainerInspect? {
        try decode("/containers/\(name)/json", as: ContainerInspect.self)
    }

    /// A container's output (stdout and stderr, demultiplexed), handed over as it
    /// arrives until `onOutput` returns false or the log ends (`follow`: the container ends).
    func logs(
        _ name: String,
        follow: Bool,
        tail: Int?,
        cancellation: StreamCancellation? = nil,
        onOutput: ([UInt8]) -> Bool
    ) throws(PodmanError) {
        var query = "stdout=true&stderr=true&follow=\(follow)"
        if let tail { query += "&tail=\(tail)" }
        var pending: [UInt8] = []
        let status: Int
        do {
            status = try client.stream(path("/containers/\(name)/logs?\(query)"), cancellation: cancellation) {
                _,
                bytes in
                pending += bytes
                // Frames: stream type (1 byte), 3 zero bytes, big-endian length, payload.
                while pending.count >= 8 {
                    let length = pending[4..<8].reduce(0) { $0 << 8 | Int($1) }
                    guard pending.count >= 8 + length else { break }
                    let payload = Array(pending[8..<8 + length])
                    pending.removeFirst(8 + length)
                    if !onOutput(payload) { return false }
                }
                return true
            }
        } catch {
            throw PodmanError(status: nil, message: error.reason)
        }
        guard status == 200 else { throw PodmanError(status: status, message: "logs of \(name)") }
    }

    // MARK: plumbing

    @discardableResult
    private func call(
        _ method: String,
        _ tail: String,
        body: some Encodable,
        expecting: Set<Int>
    ) throws(PodmanError) -> [UInt8] {
        let encoded: [UInt8]
        do {
            encoded = Array(try JSONEncoder().encode(body))
        } catch {
            throw PodmanError(status: nil, message: "cannot encode the request: \(error)")
        }
        return try call(method, tail, encoded: encoded, expecting: expecting)
    }

    @discardableResult
    private func call(
        _ method: String,
        _ tail: String,
        encoded: [UInt8]? = nil,
        expecting: Set<Int>
    ) throws(PodmanError) -> [UInt8] {
        try exchange(method, tail, encoded: encoded, expecting: expecting).answer
    }

    private func exchange(
        _ method: String,
        _ tail: String,
        encoded: [UInt8]? = nil,
        expecting: Set<Int>
    ) throws(PodmanError) -> (status: Int, answer: [UInt8]) {
        var answer: [UInt8] = []
        let status: Int
        do {
            status = try client.stream(path(tail), method: method, body: encoded) { _, bytes in
                answer += bytes
                return true
            }
        } catch {
            throw PodmanError(status: nil, message: "\(method) \(tail): \(error.reason)")
        }
        guard expecting.contains(status) else {
            throw PodmanError(status: status, message: "\(method) \(tail): " + PodmanError.message(in: answer))
        }
        return (status, answer)
    }

    private func decode<T: Decodable>(_ tail: String, as type: T.Type) throws(PodmanError) -> T? {
        let (status, answer) = try exchange("GET", tail, expecting: [200, 404])
        if status == 404 { return nil }  // no such object
        do {
            return try JSONDecoder().decode(T.self, from: Data(answer))
        } catch {
            throw PodmanError(status: 200, message: "GET \(tail): unreadable answer: \(error)")
        }
    }
}

struct PodmanError: Error, CustomStringConvertible {
    let status: Int?
    let message: String

    var description: String { status.map { "podman: HTTP \($0): \(message)" } ?? "podman: \(message)" }

    static func message(in body: [UInt8]) -> String {
        struct Failure: Decodable {
            var cause: String?
            var message: String?
        }
        if let failure = try? JSONDecoder().decode(Failure.self, from: Data(body)) {
            return failure.message ?? failure.cause ?? ""
        }
        return String(decoding: body.prefix(300), as: UTF8.self)
    }
}
