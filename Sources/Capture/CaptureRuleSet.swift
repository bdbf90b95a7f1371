import MeshNet

/// The nftables rules of one pod, as plain values: what `capture install` applies in
/// one netlink batch and what the tests compare with `nft -j list ruleset`.
///
/// One table, `inet beemesh`, so IPv4 and IPv6 share every rule:
///
/// ```
/// table inet beemesh {
///   set outbound_excluded_ports { type inet_service }
///   set outbound_excluded_v4 { type ipv4_addr; flags interval }
///   set outbound_excluded_v6 { type ipv6_addr; flags interval }
///   set inbound_proxy_ports { type inet_service }          # 15008, 15000, 15090
///   set inbound_excluded_ports { type inet_service }
///   set inbound_included_ports { type inet_service }       # only with --include-inbound-ports
///   chain outbound { type nat hook output priority -100
///     meta skuid 1337 counter return                       # the proxy's own sockets
///     meta skgid 1337 counter return
///     oifname "lo" counter return                          # loopback and the pod's own addresses
///     udp/tcp dport 53 counter redirect to :15053          # only with DNS capture
///     ip daddr @outbound_excluded_v4 counter return
///     ip6 daddr @outbound_excluded_v6 counter return
///     tcp dport @outbound_excluded_ports counter return
///     meta l4proto tcp counter redirect to :15001 }
///   chain inbound { type nat hook prerouting priority -100
///     iifname "lo" counter return
///     tcp dport @inbound_proxy_ports counter return
///     tcp dport @inbound_excluded_ports counter return
///     tcp dport != @inbound_included_ports counter return  # only with --include-inbound-ports
///     meta l4proto tcp counter redirect to :15006 }
///   # Unless --allow-non-tcp: everything but TCP (UDP, ICMP, ...) is dropped, both ways.
///   chain outbound_filter { type filter hook output priority 0
///     meta skuid 1337 counter accept; meta skgid 1337 counter accept
///     oifname "lo" counter accept
///     ct status dnat counter accept                        # DNS, redirected to :15053
///     meta l4proto tcp counter accept                      # captured above
///     icmpv6 type 133-137 counter accept                   # neighbour discovery
///     ct state established,related counter accept          # ICMP errors, replies
///     ip daddr @outbound_excluded_v4 counter accept
///     ip6 daddr @outbound_excluded_v6 counter accept
///     counter drop }
///   chain inbound_filter { type filter hook input priority 0
///     iifname "lo" counter accept
///     meta l4proto tcp counter accept
///     icmpv6 type 133-137 counter accept
///     ct state established,related counter accept          # replies to the proxy's DNS
///     counter drop }
/// }
/// ```
///
/// Hairpin: a connection from the pod to one of its own addresses leaves through `lo`,
/// so it is not captured: it stays inside the pod, like a connection to 127.0.0.1, and
/// the pod's own policies do not apply to it. Connections from other pods always come
/// in through the pod's interface and are captured.
///
/// Nothing else is touched: packets that match no redirect pass unchanged, and with
/// the proxy down a redirected connection is refused (fail closed), never sent on in
/// plaintext.
public struct CaptureRuleSet: Sendable, Equatable {
    public static let tableName = "beemesh"

    public enum Hook: Sendable, Equatable {
        /// Locally generated packets (`output`): the app's outgoing connections.
        case output
        /// Packets arriving from the network (`prerouting`).
        case prerouting
        /// Packets for a local socket, after routing (`input`).
        case input
    }

    public enum ChainType: String, Sendable, Equatable {
        case nat
        case filter
    }

    public struct Chain: Sendable, Equatable {
        public var name: String
        public var hook: Hook
        public var type: ChainType = .nat
        /// nftables' `dstnat` priority for nat chains, `filter` (0) for filter chains.
        public var priority: Int32 = -100
    }

    public enum KeyType: Sendable, Equatable {
        case ipv4Address, ipv6Address, port

        var byteCount: Int {
            switch self {
            case .ipv4Address: 4
            case .ipv6Address: 16
            case .port: 2
            }
        }
    }

    public struct NamedSet: Sendable, Equatable {
        public enum Element: Sendable, Equatable {
            case port(UInt16)
            /// Addresses `start..<end` (end nil: to the last address).
            case interval(start: UInt128, end: UInt128?)
        }

        public var name: String
        public var keyType: KeyType
        public var elements: [Element]

        public var isInterval: Bool { keyType != .port }
    }

    public enum TransportProtocol: UInt8, Sendable, Equatable {
        case tcp = 6
        case udp = 17
        case icmpv6 = 58
    }

    public enum Match: Sendable, Equatable {
        case transportProtocol(TransportProtocol)
        case socketUID(UInt32)
        case socketGID(UInt32)
        case outputInterface(String)
        case inputInterface(String)
        /// The destination address (of `family`) is in the named interval set.
        case destinationAddress(inSet: String, family: IPNetwork.Family)
        /// The TCP or UDP destination port equals the value.
        case destinationPort(TransportProtocol, UInt16)
        /// The TCP destination port is (or, negated, is not) in the named set.
        case destinationPortInSet(String, negated: Bool)
        /// The packet belongs to a connection already seen both ways, or is related to
        /// one (an ICMP error): conntrack state established or related.
        case establishedOrRelated
        /// ICMPv6 neighbour discovery (types 133-137: router and neighbour solicitation
        /// and advertisement, redirect), without which IPv6 does not work on a link.
        case neighbourDiscovery
        /// The connection's destination was rewritten (`ct status dnat`): what the nat
        /// chains redirected to the proxy (filter chains still see the old interface).
        case redirected
    }

    public enum Action: Sendable, Equatable {
        case `return`
        case redirect(port: UInt16)
        case accept
        case drop
    }

    /// Every rule also counts (a `counter` between its matches and its action).
    public struct Rule: Sendable, Equatable {
        public var chain: String
        public var matches: [Match]
        public var action: Action
        /// Shown by `nft list ruleset` and `capture show`.
        public var comment: String
    }

    public var sets: [NamedSet] = []
    public var chains: [Chain] = []
    public var rules: [Rule] = []

    public init(options: CaptureOptions) {
        func portSet(_ name: String, _ ports: [UInt16]) -> NamedSet {
            NamedSet(name: name, keyType: .port, elements: ports.sorted().map { .port($0) })
        }
        func addressSet(_ name: String, _ family: IPNetwork.Family) -> NamedSet {
            let intervals = AddressIntervals(options.excludeOutboundNetworks, family: family).intervals
            return NamedSet(
                name: name,
                keyType: family == .ipv4 ? .ipv4Address : .ipv6Address,
                elements: intervals.map { .interval(start: $0.start, end: $0.end) }
            )
        }
        sets = [
            portSet("outbound_excluded_ports", options.excludeOutboundPorts),
            addressSet("outbound_excluded_v4", .ipv4),
            addressSet("outbound_excluded_v6", .ipv6),
            portSet("inbound_proxy_ports", options.proxyPorts),
            portSet("inbound_excluded_ports", options.excludeInboundPorts),
        ]
        if !options.includeInboundPorts.isEmpty {
            sets.append(portSet("inbound_included_ports", options.includeInboundPorts))
        }
        chains = [Chain(name: "outbound", hook: .output), Chain(name: "inbound", hook: .prerouting)]

        func outbound(_ matches: [Match], _ action: Action, _ comment: String) {
            rules.append(Rule(chain: "outbound", matches: matches, action: action, comment: comment))
        }
        outbound([.socketUID(options.proxyUID)], .return, "the proxy's own sockets (uid \(options.proxyUID))")
        outbound([.socketGID(options.proxyGID)], .return, "the proxy's own sockets (gid \(options.proxyGID))")
        outbound([.outputInterface("lo")], .return, "loopback and the pod's own addresses stay in the pod")
        if options.captureDNS {
            outbound([.destinationPort(.udp, 53)], .redirect(port: options.dnsPort), "DNS (UDP) to the mesh resolver")
            outbound([.destinationPort(.tcp, 53)], .redirect(port: options.dnsPort), "DNS (TCP) to the mesh resolver")
        }
        outbound(
            [.destinationAddress(inSet: "outbound_excluded_v4", family: .ipv4)],
            .return,
            "excluded IPv4 destinations"
        )
        outbound(
            [.destinationAddress(inSet: "outbound_excluded_v6", family: .ipv6)],
            .return,
            "excluded IPv6 destinations"
        )
        outbound([.destinationPortInSet("outbound_excluded_ports", negated: false)], .return, "excluded ports")
        outbound(
            [.transportProtocol(.tcp)],
            .redirect(port: options.outboundPort),
            "outbound TCP to the proxy"
        )

        func inbound(_ matches: [Match], _ action: Action, _ comment: String) {
            rules.append(Rule(chain: "inbound", matches: matches, action: action, comment: comment))
        }
        inbound([.inputInterface("lo")], .return, "local traffic (already seen by the outbound chain)")
        inbound(
            [.destinationPortInSet("inbound_proxy_ports", negated: false)],
            .return,
            "the proxy's own listeners (mTLS, admin, metrics)"
        )
        inbound([.destinationPortInSet("inbound_excluded_ports", negated: false)], .return, "excluded ports")
        if !options.includeInboundPorts.isEmpty {
            inbound(
                [.destinationPortInSet("inbound_included_ports", negated: true)],
                .return,
                "ports not included"
            )
        }
        inbound([.transportProtocol(.tcp)], .redirect(port: options.inboundPort), "inbound TCP to the proxy")

        guard !options.allowNonTCP else { return }
        chains += [
            Chain(name: "outbound_filter", hook: .output, type: .filter, priority: 0),
            Chain(name: "inbound_filter", hook: .input, type: .filter, priority: 0),
        ]
        func filter(_ chain: String, _ matches: [Match], _ action: Action, _ comment: String) {
            rules.append(Rule(chain: chain, matches: matches, action: action, comment: comment))
        }
        let out = "outbound_filter"
        filter(out, [.socketUID(options.proxyUID)], .accept, "the proxy's own sockets (uid \(options.proxyUID))")
        filter(out, [.socketGID(options.proxyGID)], .accept, "the proxy's own sockets (gid \(options.proxyGID))")
        filter(out, [.outputInterface("lo")], .accept, "loopback")
        filter(out, [.redirected], .accept, "redirected to the proxy (DNS to the mesh resolver)")
        if !options.captureDNS {
            filter(out, [.destinationPort(.udp, 53)], .accept, "DNS (UDP) to the pod's resolvers: not captured")
        }
        filter(out, [.transportProtocol(.tcp)], .accept, "TCP (captured by the outbound chain)")
        filter(out, [.neighbourDiscovery], .accept, "ICMPv6 neighbour discovery")
        filter(out, [.establishedOrRelated], .accept, "replies and ICMP errors of known connections")
        filter(
            out,
            [.destinationAddress(inSet: "outbound_excluded_v4", family: .ipv4)],
            .accept,
            "excluded IPv4 destinations"
        )
        filter(
            out,
            [.destinationAddress(inSet: "outbound_excluded_v6", family: .ipv6)],
            .accept,
            "excluded IPv6 destinations"
        )
        filter(out, [], .drop, "anything else from the app (UDP, ICMP, ...): dropped")
        let into = "inbound_filter"
        filter(into, [.inputInterface("lo")], .accept, "local traffic")
        filter(into, [.transportProtocol(.tcp)], .accept, "TCP (captured by the inbound chain)")
        filter(into, [.neighbourDiscovery], .accept, "ICMPv6 neighbour discovery")
        filter(into, [.establishedOrRelated], .accept, "replies to the pod's own connections")
        filter(into, [], .drop, "anything else to the pod (UDP, ICMP, ...): dropped")
    }
}
