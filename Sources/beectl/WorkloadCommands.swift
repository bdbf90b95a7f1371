import ArgumentParser
import Foundation
import MeshAPI

/// The node agent's API, as `--agent` names it.
struct AgentConnection: ParsableArguments {
    @Option(help: "The node agent's API socket or http://host:port (default: $BEEMESH_AGENT, else \(defaultAgent)).")
    var agent = AgentConnection.environmentAgent

    static let defaultAgent = "/var/run/beemesh/agent/agent.sock"
    /// `$BEEMESH_AGENT` when set (as `tools/lab exec` sets it for a node), else the
    /// agent's default socket.
    static var environmentAgent: String { ProcessInfo.processInfo.environment["BEEMESH_AGENT"] ?? defaultAgent }

    func client(timeout: Double? = 60) throws -> AdminClient {
        do {
            return AdminClient(endpoint: try AdminClient.Endpoint(agent), timeout: timeout)
        } catch {
            throw ValidationError(error.reason)
        }
    }

    /// Sends a request; prints the agent's error and exits non-zero when it refuses.
    func send(_ method: String, _ path: String, body: [UInt8]) throws -> [UInt8] {
        let client = try client()
        do throws(AdminClientError) {
            let (status, answer) = try client.send(method, path, body: body)
            guard status == 200 else { throw AdminClientError(status: status, body: answer) }
            return answer
        } catch {
            FileHandle.standardError.write(Data("beectl: \(error.reason)\n".utf8))
            throw ExitCode(error.status == nil ? 2 : 1)
        }
    }

    func fetch<T: Decodable>(_ path: String, as type: T.Type) throws -> T {
        let client = try client()
        do throws(AdminClientError) {
            return try client.get(path, as: type)
        } catch {
            FileHandle.standardError.write(Data("beectl: \(error.reason)\n".utf8))
            throw ExitCode(error.status == nil ? 2 : 1)
        }
    }
}

/// Reads a manifest file (`-` for standard input).
private func readManifest(_ file: String) throws -> (name: String, bytes: [UInt8]) {
    if file == "-" { return ("stdin", Array(FileHandle.standardInput.readDataToEndOfFile())) }
    guard let data = FileManager.default.contents(atPath: file) else {
        throw ValidationError("cannot read \(file)")
    }
    return (file, Array(data))
}

private func printResult(_ answer: [UInt8]) throws {
    let result = try MeshJSON.decoder().decode(ApplyResult.self, from: Data(answer))
    for line in result.objects { print(line) }
}

struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Run the Pods, Deployments, StatefulSets and Services of a Kubernetes manifest on this node.",
        discussion: "Every object is checked first; one bad object changes nothing."
    )

    @Option(name: .shortAndLong, help: "The manifest (YAML, several documents allowed; - for stdin).")
    var filename: String

    @OptionGroup var connection: AgentConnection

    func run() throws {
        let (name, bytes) = try readManifest(filename)
        let file = name.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? "manifest"
        try printResult(try connection.send("POST", "/v1/apply?file=\(file)", body: bytes))
    }
}

struct DeleteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Remove objects (and their pods): those of a manifest, or KIND NAME."
    )

    @Option(name: .shortAndLong, help: "The manifest whose objects to remove.")
    var filename: String?

    @Argument(help: "KIND NAME, e.g. deployment orders.")
    var object: [String] = []

    @Option(name: .shortAndLong, help: "Namespace of KIND NAME.")
    var namespace = "default"

    @OptionGroup var connection: AgentConnection

    func validate() throws {
        guard (filename == nil) != object.isEmpty else { throw ValidationError("give -f FILE or KIND NAME") }
        guard object.isEmpty || object.count == 2 else { throw ValidationError("KIND NAME: two words") }
    }

    func run() throws {
        if let filename {
            let (name, bytes) = try readManifest(filename)
            let file = name.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? "manifest"
            try printResult(try connection.send("POST", "/v1/delete?file=\(file)", body: bytes))
        } else {
            try printResult(
                try connection.send("DELETE", "/v1/objects/\(object[0])/\(namespace)/\(object[1])", body: [])
            )
        }
    }
}

struct GetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "get",
        abstract: "List the node's pods or deployments (Deployments and StatefulSets)."
    )

    enum Resource: String, ExpressibleByArgument, CaseIterable {
        case pods, pod, po, deployments, deployment, deploy
    }

    enum Output: String, ExpressibleByArgument, CaseIterable {
        case table, wide, json, yaml
    }

    @Argument(help: "pods or deployments.")
    var resource: Resource

    @Option(name: .shortAndLong, help: "Only this namespace (default: all).")
    var namespace: String?

    @Option(name: .shortAndLong, help: "table, wide, json or yaml.")
    var output: Output = .table

    @OptionGroup var connection: AgentConnection

    func run() throws {
        let query = namespace.map { "?namespace=\($0)" } ?? ""
        switch resource {
        case .pods, .pod, .po:
            let pods = try connection.fetch("/v1/pods" + query, as: [PodStatus].self)
            if try printStructured(pods) { return }
            var rows = [["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE"]]
            if output == .wide { rows[0] += ["IP", "NODE", "IDENTITY", "MESSAGE"] }
            for pod in pods {
                var row = [pod.namespace, pod.name, pod.ready, pod.phase, "\(pod.restarts)", age(pod.created)]
                if output == .wide {
                    row += [pod.ip ?? "<none>", pod.node, pod.identity ?? "<not injected>", pod.message ?? ""]
                }
                rows.append(row)
            }
            print(TextTable.render(rows), terminator: "")
        case .deployments, .deployment, .deploy:
            let deployments = try connection.fetch("/v1/deployments" + query, as: [DeploymentStatus].self)
            if try printStructured(deployments) { return }
            var rows = [["NAMESPACE", "NAME", "READY", "AGE"]]
            if output == .wide { rows[0].append("KIND") }
            for deployment in deployments {
                var row = [
                    deployment.namespace, deployment.name, "\(deployment.ready)/\(deployment.replicas)",
                    age(deployment.created),
                ]
                if output == .wide { row.append(deployment.kind) }
                rows.append(row)
            }
            print(TextTable.render(rows), terminator: "")
        }
    }

    /// JSON, or YAML (JSON is YAML; printed in block style by a small writer).
    private func printStructured(_ value: some Encodable) throws -> Bool {
        switch output {
        case .json:
            print(String(decoding: try MeshJSON.encoder(pretty: true).encode(value), as: UTF8.self))
            return true
        case .yaml:
            let object = try JSONSerialization.jsonObject(with: try MeshJSON.encoder().encode(value))
            print(YAMLWriter.render(object), terminator: "")
            return true
        case .table, .wide:
            return false
        }
    }

    private func age(_ date: Date) -> String {
        let seconds = max(0, Int(Date().timeIntervalSince(date)))
        if seconds < 120 { return "\(seconds)s" }
        if seconds < 7200 { return "\(seconds / 60)m" }
        if seconds < 172_800 { return "\(seconds / 3600)h" }
        return "\(seconds / 86400)d"
    }
}

struct LogsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print a container's output (the first app container unless -c names one)."
    )

    @Argument(help: "The pod's name.")
    var pod: String

    @Option(name: .shortAndLong, help: "The container (beemesh-proxy for the sidecar).")
    var container: String?

    @Option(name: .shortAndLong, help: "The pod's namespace.")
    var namespace = "default"

    @Flag(name: .shortAndLong, help: "Keep printing until interrupted.")
    var follow = false

    @Option(help: "Only the last N lines.")
    var tail: Int?

    @OptionGroup var connection: AgentConnection

    func run() throws {
        var query: [(name: String, value: String)] = []
        if let container { query.append(("container", container)) }
        if follow { query.append(("follow", "1")) }
        if let tail { query.append(("tail", String(tail))) }
        let path = "/v1/logs/\(namespace)/\(pod)" + (query.isEmpty ? "" : "?" + QueryString.encode(query))
        let client = try connection.client(timeout: follow ? nil : 60)
        var errorBody: [UInt8] = []
        do throws(AdminClientError) {
            let status = try client.stream(path) { status, bytes in
                if status == 200 {
                    FileHandle.standardOutput.write(Data(bytes))
                } else {
                    errorBody += bytes
                }
                return true
            }
            guard status == 200 else { throw AdminClientError(status: status, body: errorBody) }
        } catch {
            FileHandle.standardError.write(Data("beectl: \(error.reason)\n".utf8))
            throw ExitCode(error.status == nil ? 2 : 1)
        }
    }
}

/// Block-style YAML for `-o yaml`: mappings, lists, strings quoted when needed.
enum YAMLWriter {
    static func render(_ value: Any, indent: Int = 0) -> String {
        let pad = String(repeating: " ", count: indent)
        switch value {
        case let dictionary as [String: Any]:
            if dictionary.isEmpty { return pad + "{}\n" }
            return dictionary.keys.sorted().map { key in
                let item = dictionary[key]!
                if isScalar(item) { return "\(pad)\(key): \(scalar(item))\n" }
                if let list = item as? [Any], list.isEmpty { return "\(pad)\(key): []\n" }
                return "\(pad)\(key):\n" + render(item, indent: indent + 2)
            }.joined()
        case let list as [Any]:
            if list.isEmpty { return pad + "[]\n" }
            return list.map { item in
                if isScalar(item) { return "\(pad)- \(scalar(item))\n" }
                let body = render(item, indent: indent + 2)
                return pad + "- " + body.dropFirst(indent + 2)
            }.joined()
        default:
            return pad + scalar(value) + "\n"
        }
    }

    private static func isScalar(_ value: Any) -> Bool { !(value is [String: Any]) && !(value is [Any]) }

    private static func scalar(_ value: Any) -> String {
        switch value {
        case let string as String:
            let plain =
                !string.isEmpty && string.allSatisfy { $0.isLetter || $0.isNumber || "-_./".contains($0) }
                && Double(string) == nil && !["true", "false", "null", "yes", "no", "on", "off"].contains(string)
            return plain
                ? string
                : "\""
                    + string.replacingOccurrences(of: "\\", with: "\\\\")
                    .replacingOccurrences(of: "\"", with: "\\\"") + "\""
        case let number as NSNumber:
            // JSON booleans come back as NSNumbers of type `c`; JSON numbers never do.
            return String(cString: number.objCType) == "c" ? (number.boolValue ? "true" : "false") : "\(number)"
        case is NSNull:
            return "null"
        default:
            return "\(value)"
        }
    }
}
