import ArgumentParser
import Capture

/// `beemesh-proxy capture install|remove|show`: the pod's nftables rules, programmed
/// over netlink (libnftnl). Run by the node agent from the host with `--netns`, so that
/// no container needs NET_ADMIN.
struct CaptureCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Install, remove or show the pod's traffic capture rules (nftables table inet beemesh).",
        subcommands: [Install.self, Remove.self, Show.self]
    )

    struct Namespace: ParsableArguments {
        @Option(help: "Network namespace to program: a name from `ip netns` or a path such as /proc/PID/ns/net.")
        var netns: String?

        /// Enters the namespace on this thread (the netlink socket opened next lives
        /// there), then runs `body`; a refusal from either becomes a one-line failure.
        func run<Value>(_ body: () throws(NetfilterError) -> Value) throws -> Value {
            do {
                if let netns { try NetworkNamespace.enter(netns) }
            } catch {
                throw CaptureFailure(message: error.description)
            }
            do {
                return try body()
            } catch {
                throw CaptureFailure(message: error.description)
            }
        }
    }

    struct Install: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace the capture rules atomically (installing twice leaves one table)."
        )

        @OptionGroup var namespace: Namespace

        @Option(help: "The proxy's user (uid or name): its sockets are never redirected.")
        var proxyUid = "1337"

        @Option(help: "The proxy's group (gid or name): its sockets are never redirected.")
        var proxyGid = "1337"

        @Option(help: "Where outbound TCP is redirected.")
        var outboundPort = 15001

        @Option(help: "Where inbound TCP is redirected.")
        var inboundPort = 15006

        @Flag(help: "Let traffic other than TCP into and out of the pod (by default it is dropped; DNS is captured).")
        var allowNonTcp = false

        @Flag(inversion: .prefixedNo, help: "Redirect DNS (UDP and TCP port 53) to --dns-port, the mesh DNS.")
        var captureDns = true

        @Option(help: "Where DNS is redirected with --capture-dns.")
        var dnsPort = 15053

        @Option(help: "Outbound destination ports never redirected (comma-separated; repeatable).")
        var excludeOutboundPorts: [String] = []

        @Option(help: "Outbound destination networks never redirected (CIDRs, comma-separated; repeatable).")
        var excludeOutboundCidrs: [String] = []

        @Option(help: "Inbound ports never redirected (comma-separated; repeatable).")
        var excludeInboundPorts: [String] = []

        @Option(help: "Redirect only these inbound ports (comma-separated; repeatable). Default: all.")
        var includeInboundPorts: [String] = []

        /// Every option is checked here, before anything touches the kernel.
        func options() throws(CaptureOptionError) -> CaptureOptions {
            var options = CaptureOptions()
            options.proxyUID = try CaptureOptions.userID(proxyUid, option: "--proxy-uid")
            options.proxyGID = try CaptureOptions.groupID(proxyGid, option: "--proxy-gid")
            options.outboundPort = try Self.port(outboundPort, option: "--outbound-port")
            options.inboundPort = try Self.port(inboundPort, option: "--inbound-port")
            options.captureDNS = captureDns
            options.allowNonTCP = allowNonTcp
            options.dnsPort = try Self.port(dnsPort, option: "--dns-port")
            options.excludeOutboundPorts = try CaptureOptions.ports(
                excludeOutboundPorts.joined(separator: ","),
                option: "--exclude-outbound-ports"
            )
            options.excludeOutboundNetworks = try CaptureOptions.networks(
                excludeOutboundCidrs.joined(separator: ","),
                option: "--exclude-outbound-cidrs"
            )
            options.excludeInboundPorts = try CaptureOptions.ports(
                excludeInboundPorts.joined(separator: ","),
                option: "--exclude-inbound-ports"
            )
            options.includeInboundPorts = try CaptureOptions.ports(
                includeInboundPorts.joined(separator: ","),
                option: "--include-inbound-ports"
            )
            try options.validate()
            return options
        }

        private static func port(_ value: Int, option: String) throws(CaptureOptionError) -> UInt16 {
            guard (1...65535).contains(value) else {
                throw CaptureOptionError("\(option): \(value) is not a port (1-65535)")
            }
            return UInt16(value)
        }

        func validate() throws {
            do {
                _ = try options()
            } catch {
                throw ValidationError(error.description)
            }
        }

        func run() throws {
            let ruleSet = CaptureRuleSet(options: try options())
            try namespace.run { () throws(NetfilterError) in try CaptureTable.install(ruleSet) }
            print(
                "capture installed: table inet \(CaptureRuleSet.tableName), \(ruleSet.rules.count) rules"
                    + (namespace.netns.map { " in network namespace \($0)" } ?? "")
            )
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete the capture table (no error if absent).")

        @OptionGroup var namespace: Namespace

        func run() throws {
            let existed = try namespace.run { () throws(NetfilterError) in try CaptureTable.remove() }
            print(existed ? "capture removed" : "no capture table was installed")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the capture rules and their counters, read back from the kernel."
        )

        @OptionGroup var namespace: Namespace

        func run() throws {
            let rules = try namespace.run { () throws(NetfilterError) in try CaptureTable.rules() }
            guard let rules else {
                throw CaptureFailure(message: "no capture table (inet \(CaptureRuleSet.tableName)) is installed")
            }
            let rows =
                [["CHAIN", "HANDLE", "PACKETS", "BYTES", "RULE"]]
                + rules.map { ["\($0.chain)", "\($0.handle)", "\($0.packets)", "\($0.bytes)", $0.comment] }
            let widths = (0..<4).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                let padded = (0..<4).map { row[$0] + String(repeating: " ", count: widths[$0] + 2 - row[$0].count) }
                print((padded + [row[4]]).joined())
            }
        }
    }
}

/// A capture command that could not complete: printed as `Error: …`, exit status 1.
struct CaptureFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}
