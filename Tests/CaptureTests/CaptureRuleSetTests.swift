import MeshNet
import Testing

@testable import Capture

@Suite struct CaptureRuleSetTests {
    @Test func defaultRulesInOrder() {
        let ruleSet = CaptureRuleSet(options: CaptureOptions())
        #expect(ruleSet.chains.map(\.name) == ["outbound", "inbound", "outbound_filter", "inbound_filter"])
        #expect(ruleSet.chains.map(\.type) == [.nat, .nat, .filter, .filter])
        // Everything but TCP is dropped both ways after what is let through.
        let filters = ruleSet.rules.filter { $0.chain.hasSuffix("_filter") }
        #expect(filters.filter { $0.action == .drop }.map(\.chain) == ["outbound_filter", "inbound_filter"])
        #expect(filters.filter { $0.action == .drop }.allSatisfy { $0.matches.isEmpty })
        var allowing = CaptureOptions()
        allowing.allowNonTCP = true
        #expect(CaptureRuleSet(options: allowing).chains.map(\.name) == ["outbound", "inbound"])
        let outbound = ruleSet.rules.filter { $0.chain == "outbound" }
        #expect(
            outbound.map(\.matches) == [
                [.socketUID(1337)],
                [.socketGID(1337)],
                [.outputInterface("lo")],
                [.destinationPort(.udp, 53)],
                [.destinationPort(.tcp, 53)],
                [.destinationAddress(inSet: "outbound_excluded_v4", family: .ipv4)],
                [.destinationAddress(inSet: "outbound_excluded_v6", family: .ipv6)],
                [.destinationPortInSet("outbound_excluded_ports", negated: false)],
                [.transportProtocol(.tcp)],
            ]
        )
        #expect(
            outbound.map(\.action) == [
                .return, .return, .return, .redirect(port: 15053), .redirect(port: 15053), .return, .return, .return,
                .redirect(port: 15001),
            ]
        )
        let inbound = ruleSet.rules.filter { $0.chain == "inbound" }
        #expect(inbound.last?.action == .redirect(port: 15006))
        #expect(inbound.first?.matches == [.inputInterface("lo")])
        let proxyPorts = ruleSet.sets.first { $0.name == "inbound_proxy_ports" }
        #expect(proxyPorts?.elements == [.port(15000), .port(15008), .port(15090)])
        // Without DNS capture, port 53 is left alone.
        var noDNS = CaptureOptions()
        noDNS.captureDNS = false
        #expect(!CaptureRuleSet(options: noDNS).rules.contains { $0.action == .redirect(port: 15053) })
    }

    @Test func optionsShapeTheRules() throws {
        var options = CaptureOptions()
        options.proxyUID = 2000
        options.proxyGID = 2001
        options.captureDNS = true
        options.excludeOutboundPorts = [22, 9000]
        options.excludeOutboundNetworks = [try IPNetwork(parsing: "169.254.169.254/32")]
        options.includeInboundPorts = [8080]
        let ruleSet = CaptureRuleSet(options: options)
        #expect(ruleSet.rules[0].matches == [.socketUID(2000)])
        #expect(ruleSet.rules[1].matches == [.socketGID(2001)])
        #expect(
            ruleSet.rules.filter { $0.action == .redirect(port: 15053) }.map(\.matches) == [
                [.destinationPort(.udp, 53)], [.destinationPort(.tcp, 53)],
            ]
        )
        let v4 = ruleSet.sets.first { $0.name == "outbound_excluded_v4" }
        #expect(v4?.elements == [.interval(start: 0xA9FE_A9FE, end: 0xA9FE_A9FF)])
        #expect(ruleSet.sets.first { $0.name == "outbound_excluded_ports" }?.elements == [.port(22), .port(9000)])
        #expect(
            ruleSet.rules.contains {
                $0.chain == "inbound" && $0.matches == [.destinationPortInSet("inbound_included_ports", negated: true)]
            }
        )
    }

    @Test func optionParsersRefuseBadInput() {
        #expect(throws: CaptureOptionError("--x: '0' is not a port (1-65535)")) {
            try CaptureOptions.ports("80,0", option: "--x")
        }
        #expect(throws: CaptureOptionError("--x: '65536' is not a port (1-65535)")) {
            try CaptureOptions.ports("65536", option: "--x")
        }
        #expect(throws: CaptureOptionError("--x: 'http' is not a port (1-65535)")) {
            try CaptureOptions.ports("http", option: "--x")
        }
        #expect(throws: CaptureOptionError("--u: no user named 'no-such-user-here' on this system")) {
            try CaptureOptions.userID("no-such-user-here", option: "--u")
        }
        #expect(throws: CaptureOptionError("--g: no group named 'no-such-group-here' on this system")) {
            try CaptureOptions.groupID("no-such-group-here", option: "--g")
        }
        #expect((try? CaptureOptions.ports("80, 443,80", option: "--x")) == [80, 443])
        #expect((try? CaptureOptions.userID("root", option: "--u")) == 0)
        var options = CaptureOptions()
        options.includeInboundPorts = [15008]
        #expect(throws: CaptureOptionError.self) { try options.validate() }
        options = CaptureOptions()
        options.inboundPort = options.outboundPort
        #expect(throws: CaptureOptionError.self) { try options.validate() }
    }
}
