import CNetfilter
import MeshNet

#if canImport(Glibc)
    import Glibc
#endif

/// `CaptureRuleSet` values rendered into libnftnl objects, and rules parsed back.
///
/// The expressions are the ones `nft` itself generates for the same rules, so that
/// `nft list ruleset` prints them in its usual syntax (see `CaptureRuleSet`).
enum NetfilterObjects {
    private static let register = netfilterU32(NFT_REG_1)

    static func makeChain(_ chain: CaptureRuleSet.Chain) -> OpaquePointer {
        let object = nftnl_chain_alloc()!
        nftnl_chain_set_str(object, netfilterU16(NFTNL_CHAIN_TABLE), CaptureRuleSet.tableName)
        nftnl_chain_set_str(object, netfilterU16(NFTNL_CHAIN_NAME), chain.name)
        nftnl_chain_set_str(object, netfilterU16(NFTNL_CHAIN_TYPE), chain.type.rawValue)
        let hook =
            switch chain.hook {
            case .output: NF_INET_LOCAL_OUT
            case .prerouting: NF_INET_PRE_ROUTING
            case .input: NF_INET_LOCAL_IN
            }
        nftnl_chain_set_u32(object, netfilterU16(NFTNL_CHAIN_HOOKNUM), netfilterU32(hook))
        nftnl_chain_set_s32(object, netfilterU16(NFTNL_CHAIN_PRIO), chain.priority)
        nftnl_chain_set_u32(object, netfilterU16(NFTNL_CHAIN_POLICY), UInt32(NF_ACCEPT))
        return object
    }

    static func makeSet(_ set: CaptureRuleSet.NamedSet, id: UInt32) -> OpaquePointer {
        let object = nftnl_set_alloc()!
        nftnl_set_set_str(object, netfilterU16(NFTNL_SET_TABLE), CaptureRuleSet.tableName)
        nftnl_set_set_str(object, netfilterU16(NFTNL_SET_NAME), set.name)
        nftnl_set_set_u32(object, netfilterU16(NFTNL_SET_FAMILY), UInt32(NetfilterBatch.family))
        nftnl_set_set_u32(object, netfilterU16(NFTNL_SET_ID), id)
        nftnl_set_set_u32(object, netfilterU16(NFTNL_SET_KEY_LEN), UInt32(set.keyType.byteCount))
        // nft's data type numbers, so that `nft list` prints addresses and ports.
        let keyType: UInt32 =
            switch set.keyType {
            case .ipv4Address: 7
            case .ipv6Address: 8
            case .port: 13
            }
        nftnl_set_set_u32(object, netfilterU16(NFTNL_SET_KEY_TYPE), keyType)
        if set.isInterval {
            nftnl_set_set_u32(object, netfilterU16(NFTNL_SET_FLAGS), netfilterU32(NFT_SET_INTERVAL))
        }
        let family: IPNetwork.Family = set.keyType == .ipv6Address ? .ipv6 : .ipv4
        for element in set.elements {
            switch element {
            case .port(let port):
                addElement(to: object, key: [UInt8(port >> 8), UInt8(port & 0xFF)], intervalEnd: false)
            case .interval(let start, let end):
                addElement(to: object, key: IPNetwork.bytes(start, family: family), intervalEnd: false)
                if let end {
                    addElement(to: object, key: IPNetwork.bytes(end, family: family), intervalEnd: true)
                }
            }
        }
        return object
    }

    private static func addElement(to set: OpaquePointer, key: [UInt8], intervalEnd: Bool) {
        let element = nftnl_set_elem_alloc()!
        key.withUnsafeBytes { bytes in
            _ = nftnl_set_elem_set(element, netfilterU16(NFTNL_SET_ELEM_KEY), bytes.baseAddress, UInt32(bytes.count))
        }
        if intervalEnd {
            nftnl_set_elem_set_u32(
                element,
                netfilterU16(NFTNL_SET_ELEM_FLAGS),
                netfilterU32(NFT_SET_ELEM_INTERVAL_END)
            )
        }
        nftnl_set_elem_add(set, element)
    }

    static func makeRule(_ rule: CaptureRuleSet.Rule, setIDs: [String: UInt32]) -> OpaquePointer {
        let object = nftnl_rule_alloc()!
        nftnl_rule_set_str(object, netfilterU16(NFTNL_RULE_TABLE), CaptureRuleSet.tableName)
        nftnl_rule_set_str(object, netfilterU16(NFTNL_RULE_CHAIN), rule.chain)
        nftnl_rule_set_u32(object, netfilterU16(NFTNL_RULE_FAMILY), UInt32(NetfilterBatch.family))
        for match in rule.matches {
            for expression in expressions(for: match, setIDs: setIDs) {
                nftnl_rule_add_expr(object, expression)
            }
        }
        nftnl_rule_add_expr(object, nftnl_expr_alloc("counter"))
        switch rule.action {
        case .return:
            let verdict = nftnl_expr_alloc("immediate")!
            nftnl_expr_set_u32(verdict, netfilterU16(NFTNL_EXPR_IMM_DREG), netfilterU32(NFT_REG_VERDICT))
            nftnl_expr_set_u32(
                verdict,
                netfilterU16(NFTNL_EXPR_IMM_VERDICT),
                UInt32(bitPattern: Int32(netfilterI64(NFT_RETURN)))
            )
            nftnl_rule_add_expr(object, verdict)
        case .accept, .drop:
            let verdict = nftnl_expr_alloc("immediate")!
            nftnl_expr_set_u32(verdict, netfilterU16(NFTNL_EXPR_IMM_DREG), netfilterU32(NFT_REG_VERDICT))
            nftnl_expr_set_u32(
                verdict,
                netfilterU16(NFTNL_EXPR_IMM_VERDICT),
                UInt32(rule.action == .accept ? NF_ACCEPT : NF_DROP)
            )
            nftnl_rule_add_expr(object, verdict)
        case .redirect(let port):
            let immediate = nftnl_expr_alloc("immediate")!
            nftnl_expr_set_u32(immediate, netfilterU16(NFTNL_EXPR_IMM_DREG), register)
            setData(immediate, netfilterU32(NFTNL_EXPR_IMM_DATA), [UInt8(port >> 8), UInt8(port & 0xFF)])
            nftnl_rule_add_expr(object, immediate)
            let redirect = nftnl_expr_alloc("redir")!
            nftnl_expr_set_u32(redirect, netfilterU16(NFTNL_EXPR_REDIR_REG_PROTO_MIN), register)
            nftnl_rule_add_expr(object, redirect)
        }
        let userData = RuleUserData.encode(comment: rule.comment)
        userData.withUnsafeBytes { bytes in
            _ = nftnl_rule_set_data(object, netfilterU16(NFTNL_RULE_USERDATA), bytes.baseAddress, UInt32(bytes.count))
        }
        return object
    }

    private static func expressions(
        for match: CaptureRuleSet.Match,
        setIDs: [String: UInt32]
    ) -> [OpaquePointer] {
        switch match {
        case .transportProtocol(let proto):
            return [meta(NFT_META_L4PROTO), compare(.equal, [proto.rawValue])]
        case .socketUID(let uid):
            return [meta(NFT_META_SKUID), compare(.equal, hostOrder(uid))]
        case .socketGID(let gid):
            return [meta(NFT_META_SKGID), compare(.equal, hostOrder(gid))]
        case .outputInterface(let name):
            return [meta(NFT_META_OIFNAME), compare(.equal, interfaceName(name))]
        case .inputInterface(let name):
            return [meta(NFT_META_IIFNAME), compare(.equal, interfaceName(name))]
        case .destinationAddress(let set, let family):
            let nfproto = family == .ipv4 ? NFPROTO_IPV4 : NFPROTO_IPV6
            let (offset, length): (UInt32, UInt32) = family == .ipv4 ? (16, 4) : (24, 16)
            return [
                meta(NFT_META_NFPROTO), compare(.equal, [UInt8(netfilterU32(nfproto))]),
                payload(NFT_PAYLOAD_NETWORK_HEADER, offset: offset, length: length),
                lookup(set, id: setIDs[set], negated: false),
            ]
        case .destinationPort(let proto, let port):
            return [
                meta(NFT_META_L4PROTO), compare(.equal, [proto.rawValue]),
                payload(NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, length: 2),
                compare(.equal, [UInt8(port >> 8), UInt8(port & 0xFF)]),
            ]
        case .destinationPortInSet(let set, let negated):
            return [
                meta(NFT_META_L4PROTO), compare(.equal, [CaptureRuleSet.TransportProtocol.tcp.rawValue]),
                payload(NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, length: 2),
                lookup(set, id: setIDs[set], negated: negated),
            ]
        case .establishedOrRelated:
            return conntrackAny(NFT_CT_STATE, of: Self.establishedOrRelatedBits)
        case .neighbourDiscovery:
            return [
                meta(NFT_META_L4PROTO), compare(.equal, [CaptureRuleSet.TransportProtocol.icmpv6.rawValue]),
                payload(NFT_PAYLOAD_TRANSPORT_HEADER, offset: 0, length: 1),
                compare(.greaterOrEqual, [133]),
                compare(.lessOrEqual, [137]),
            ]
        case .redirected:
            return conntrackAny(NFT_CT_STATUS, of: Self.destinationNATBit)
        }
    }

    /// `ct KEY & bits != 0`: the connection's state or status (a 32-bit mask in host
    /// order) has one of `bits`.
    private static func conntrackAny(_ key: nft_ct_keys, of bits: UInt32) -> [OpaquePointer] {
        let load = nftnl_expr_alloc("ct")!
        nftnl_expr_set_u32(load, netfilterU16(NFTNL_EXPR_CT_KEY), netfilterU32(key))
        nftnl_expr_set_u32(load, netfilterU16(NFTNL_EXPR_CT_DREG), register)
        let mask = nftnl_expr_alloc("bitwise")!
        nftnl_expr_set_u32(mask, netfilterU16(NFTNL_EXPR_BITWISE_SREG), register)
        nftnl_expr_set_u32(mask, netfilterU16(NFTNL_EXPR_BITWISE_DREG), register)
        nftnl_expr_set_u32(mask, netfilterU16(NFTNL_EXPR_BITWISE_LEN), 4)
        setData(mask, netfilterU32(NFTNL_EXPR_BITWISE_MASK), hostOrder(bits))
        setData(mask, netfilterU32(NFTNL_EXPR_BITWISE_XOR), [0, 0, 0, 0])
        return [load, mask, compare(.notEqual, [0, 0, 0, 0])]
    }

    /// Conntrack's `IPS_DST_NAT` status bit.
    private static let destinationNATBit: UInt32 = 1 << 5

    /// Conntrack's state bits (`NF_CT_STATE_BIT`): established 2, related 4.
    private static let establishedOrRelatedBits: UInt32 = 2 | 4

    private enum Comparison { case equal, notEqual, greaterOrEqual, lessOrEqual }

    private static func meta(_ key: nft_meta_keys) -> OpaquePointer {
        let expression = nftnl_expr_alloc("meta")!
        nftnl_expr_set_u32(expression, netfilterU16(NFTNL_EXPR_META_KEY), netfilterU32(key))
        nftnl_expr_set_u32(expression, netfilterU16(NFTNL_EXPR_META_DREG), register)
        return expression
    }

    private static func compare(_ comparison: Comparison, _ data: [UInt8]) -> OpaquePointer {
        let operation =
            switch comparison {
            case .equal: NFT_CMP_EQ
            case .notEqual: NFT_CMP_NEQ
            case .greaterOrEqual: NFT_CMP_GTE
            case .lessOrEqual: NFT_CMP_LTE
            }
        let expression = nftnl_expr_alloc("cmp")!
        nftnl_expr_set_u32(expression, netfilterU16(NFTNL_EXPR_CMP_SREG), register)
        nftnl_expr_set_u32(
            expression,
            netfilterU16(NFTNL_EXPR_CMP_OP),
            netfilterU32(operation)
        )
        setData(expression, netfilterU32(NFTNL_EXPR_CMP_DATA), data)
        return expression
    }

    private static func payload(_ base: nft_payload_bases, offset: UInt32, length: UInt32) -> OpaquePointer {
        let expression = nftnl_expr_alloc("payload")!
        nftnl_expr_set_u32(expression, netfilterU16(NFTNL_EXPR_PAYLOAD_DREG), register)
        nftnl_expr_set_u32(expression, netfilterU16(NFTNL_EXPR_PAYLOAD_BASE), netfilterU32(base))
        nftnl_expr_set_u32(expression, netfilterU16(NFTNL_EXPR_PAYLOAD_OFFSET), offset)
        nftnl_expr_set_u32(expression, netfilterU16(NFTNL_EXPR_PAYLOAD_LEN), length)
        return expression
    }

    private static func lookup(_ set: String, id: UInt32?, negated: Bool) -> OpaquePointer {
        let expression = nftnl_expr_alloc("lookup")!
        nftnl_expr_set_u32(expression, netfilterU16(NFTNL_EXPR_LOOKUP_SREG), register)
        nftnl_expr_set_str(expression, netfilterU16(NFTNL_EXPR_LOOKUP_SET), set)
        if let id {
            nftnl_expr_set_u32(expression, netfilterU16(NFTNL_EXPR_LOOKUP_SET_ID), id)
        }
        if negated {
            nftnl_expr_set_u32(expression, netfilterU16(NFTNL_EXPR_LOOKUP_FLAGS), netfilterU32(NFT_LOOKUP_F_INV))
        }
        return expression
    }

    private static func setData(_ expression: OpaquePointer, _ attribute: UInt32, _ data: [UInt8]) {
        data.withUnsafeBytes { bytes in
            _ = nftnl_expr_set(expression, UInt16(attribute), bytes.baseAddress, UInt32(bytes.count))
        }
    }

    private static func hostOrder(_ value: UInt32) -> [UInt8] {
        withUnsafeBytes(of: value) { Array($0) }
    }

    /// Interface names compare as the kernel's 16-byte, NUL-padded IFNAMSIZ field.
    private static func interfaceName(_ name: String) -> [UInt8] {
        let bytes = Array(name.utf8.prefix(15))
        return bytes + [UInt8](repeating: 0, count: 16 - bytes.count)
    }

    /// A NEWRULE message of a dump, reduced to what `capture show` prints.
    static func parseRule(_ message: [UInt8]) -> CaptureTable.RuleCounters? {
        let rule = nftnl_rule_alloc()!
        defer { nftnl_rule_free(rule) }
        let parsed = message.withUnsafeBytes { bytes in
            nftnl_rule_nlmsg_parse(bytes.baseAddress!.assumingMemoryBound(to: nlmsghdr.self), rule)
        }
        guard parsed >= 0, let chain = nftnl_rule_get_str(rule, netfilterU16(NFTNL_RULE_CHAIN)) else {
            return nil
        }
        var result = CaptureTable.RuleCounters(
            chain: String(cString: chain),
            handle: nftnl_rule_get_u64(rule, netfilterU16(NFTNL_RULE_HANDLE)),
            comment: "",
            packets: 0,
            bytes: 0
        )
        var length: UInt32 = 0
        if let data = nftnl_rule_get_data(rule, netfilterU16(NFTNL_RULE_USERDATA), &length) {
            let bytes = Array(UnsafeRawBufferPointer(start: data, count: Int(length)))
            result.comment = RuleUserData.comment(in: bytes) ?? ""
        }
        let iterator = nftnl_expr_iter_create(rule)!
        defer { nftnl_expr_iter_destroy(iterator) }
        while let expression = nftnl_expr_iter_next(iterator) {
            guard let name = nftnl_expr_get_str(expression, netfilterU16(NFTNL_EXPR_NAME)),
                String(cString: name) == "counter"
            else { continue }
            result.packets = nftnl_expr_get_u64(expression, netfilterU16(NFTNL_EXPR_CTR_PACKETS))
            result.bytes = nftnl_expr_get_u64(expression, netfilterU16(NFTNL_EXPR_CTR_BYTES))
        }
        return result
    }
}
