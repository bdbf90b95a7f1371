import ArgumentParser
import Foundation
import Policy

/// `beectl policy lint|check`: the operator's view of a policy directory, with the same
/// parser and evaluator the sidecars use.
struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Check policy files and show how they decide a connection.",
        subcommands: [Lint.self, Check.self]
    )

    struct Lint: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Parse every policy file of a directory; print each error as file:line: field: reason."
        )

        @Argument(help: "Policy directory.")
        var directory = "/etc/beemesh/policies"

        func run() throws {
            var library = PolicyLibrary()
            let contents = PolicyDirectory.read(directory)
            let update = library.update(contents)
            for error in update.rejected {
                print(error.description)
            }
            let policies = library.policies
            let egress = library.egressPolicies
            let summary =
                "files \(contents.count), mesh policies \(policies.count) "
                + "(rules \(policies.reduce(0) { $0 + $1.rules.count })), egress policies \(egress.count) "
                + "(rules \(egress.reduce(0) { $0 + $1.rules.count }))"
            guard update.rejected.isEmpty else {
                FileHandle.standardError.write(Data("beectl: \(update.rejected.count) refused (\(summary))\n".utf8))
                throw ExitCode(1)
            }
            print("ok: \(summary)")
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the decision for one connection (or HTTP request) and the policy and rule that made it."
        )

        @Option(help: "Policy directory.")
        var dir = "/etc/beemesh/policies"

        @Option(help: "The peer: a SPIFFE ID, or `unauthenticated`.")
        var from: String

        @Option(help: "Namespace of the destination workload.")
        var toNamespace = "default"

        @Option(help: "Labels of the destination workload, k=v (comma-separated; repeatable).")
        var toLabels: [String] = []

        @Option(help: "Destination port.")
        var port: Int

        @Option(help: "HTTP method, for a request-level decision.")
        var method: String?

        @Option(help: "HTTP path, for a request-level decision.")
        var path: String?

        func validate() throws {
            guard (1...65535).contains(port) else { throw ValidationError("--port: \(port) is not a port (1-65535)") }
            if from != "unauthenticated" && PeerIdentity(from) == nil {
                throw ValidationError("--from: '\(from)' is neither a SPIFFE ID nor `unauthenticated`")
            }
            _ = try labels()
        }

        private func labels() throws -> [String: String] {
            var labels: [String: String] = [:]
            for pair in toLabels.flatMap({ $0.split(separator: ",") }) {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, !parts[0].isEmpty else {
                    throw ValidationError("--to-labels: '\(pair)' is not key=value")
                }
                labels[String(parts[0])] = String(parts[1])
            }
            return labels
        }

        func run() throws {
            var library = PolicyLibrary()
            let update = library.update(PolicyDirectory.read(dir))
            for error in update.rejected {
                FileHandle.standardError.write(Data("beectl: refused (not in force): \(error)\n".utf8))
            }
            let workload = Workload(namespace: toNamespace, labels: try labels())
            let peer = from == "unauthenticated" ? nil : PeerIdentity(from)
            var http: PolicyRequest.HTTP?
            if method != nil || path != nil {
                http = PolicyRequest.HTTP(method: method ?? "GET", path: Substring(path ?? "/"))
            }
            let set = PolicySet(library.policies, for: workload)
            if http != nil && !set.httpPorts.contains(UInt16(port)) {
                print("note: no HTTP rule names port \(port): sidecars treat it as opaque TCP and decide connections")
            }
            let decision = set.evaluate(PolicyRequest(peer: peer, port: UInt16(port), http: http))
            print(decision.description)
            if !decision.isAllowed { throw ExitCode(1) }
        }
    }
}
