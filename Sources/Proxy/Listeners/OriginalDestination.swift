import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// The destination an app dialled before nftables redirected its connection to the
/// proxy, from conntrack: `SO_ORIGINAL_DST` (IPv4) and `IP6T_SO_ORIGINAL_DST` (IPv6).
enum OriginalDestination {
    /// <linux/netfilter_ipv4.h> SO_ORIGINAL_DST and <linux/netfilter_ipv6/ip6_tables.h>
    /// IP6T_SO_ORIGINAL_DST: both 80, at SOL_IP and SOL_IPV6.
    private static let option: SocketOptionName = 80

    /// Fails when the connection was not redirected (no conntrack entry).
    static func lookup(_ channel: any Channel) -> EventLoopFuture<SocketAddress> {
        guard let provider = channel as? any SocketOptionProvider, let local = channel.localAddress else {
            return channel.eventLoop.makeFailedFuture(ChannelError.operationUnsupported)
        }
        switch local {
        case .v6:
            return provider.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_IPV6), name: option)
                .map { (address: sockaddr_in6) in SocketAddress(address) }
        default:
            return provider.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_IP), name: option)
                .map { (address: sockaddr_in) in SocketAddress(address) }
        }
    }
}
