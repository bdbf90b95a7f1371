#if canImport(Glibc)
    import Glibc
#endif

/// The kernel or libnftnl refused an nftables operation. Names the object whose
/// message failed, so an operator reads "add rule … in chain outbound: Operation not
/// supported", not a bare errno.
public struct NetfilterError: Error, CustomStringConvertible {
    /// What was being done: `add rule "outbound TCP to the proxy" to chain outbound`.
    public let operation: String
    public let errno: Int32

    public var description: String {
        let reason = String(cString: strerror(errno))
        var text = "nftables: \(operation): \(reason) (errno \(errno))"
        switch errno {
        case EPERM:
            text += "; capture needs CAP_NET_ADMIN in the target network namespace (run as root)"
        case ENOENT where operation.contains("chain") || operation.contains("rule"):
            text += "; is the nf_tables nat support (nft_chain_nat) available in this kernel?"
        case EOPNOTSUPP, ENOENT:
            text += "; the kernel lacks an nftables feature this rule needs (nft_redir, nft_nat)"
        default:
            break
        }
        return text
    }
}
