import CNetfilter

#if canImport(Glibc)
    import Glibc
#endif

/// The `inet beemesh` table of the current network namespace, programmed over netlink
/// through libnftnl. No `nft` process is ever started.
public enum CaptureTable {
    /// One rule as the kernel reports it.
    public struct RuleCounters: Sendable, Equatable {
        public var chain: String
        public var handle: UInt64
        public var comment: String
        public var packets: UInt64
        public var bytes: UInt64
    }

    /// Replaces the table with `ruleSet` in one transaction: the old table (if any) and
    /// the new one are never both half there. Installing twice leaves one table.
    public static func install(_ ruleSet: CaptureRuleSet) throws(NetfilterError) {
        let batch = NetfilterBatch()
        let table = "table inet \(CaptureRuleSet.tableName)"
        // NEWTABLE then DELTABLE makes the delete valid whether or not the table
        // existed; the second NEWTABLE starts it empty.
        batch.add(NFT_MSG_NEWTABLE, flags: NLM_F_CREATE, object: "create \(table)", build: buildTable)
        batch.add(NFT_MSG_DELTABLE, flags: 0, object: "replace \(table)", build: buildTable)
        batch.add(NFT_MSG_NEWTABLE, flags: NLM_F_CREATE, object: "create \(table)", build: buildTable)
        for (index, set) in ruleSet.sets.enumerated() {
            let object = NetfilterObjects.makeSet(set, id: UInt32(index + 1))
            defer { nftnl_set_free(object) }
            batch.add(NFT_MSG_NEWSET, flags: NLM_F_CREATE, object: "add set \(set.name)") { header in
                nftnl_set_nlmsg_build_payload(header, object)
            }
            if !set.elements.isEmpty {
                batch.add(NFT_MSG_NEWSETELEM, flags: NLM_F_CREATE, object: "add elements to set \(set.name)") {
                    header in
                    nftnl_set_elems_nlmsg_build_payload(header, object)
                }
            }
        }
        for chain in ruleSet.chains {
            let object = NetfilterObjects.makeChain(chain)
            defer { nftnl_chain_free(object) }
            batch.add(NFT_MSG_NEWCHAIN, flags: NLM_F_CREATE, object: "add chain \(chain.name)") { header in
                nftnl_chain_nlmsg_build_payload(header, object)
            }
        }
        let setIDs = Dictionary(uniqueKeysWithValues: ruleSet.sets.enumerated().map { ($1.name, UInt32($0 + 1)) })
        for rule in ruleSet.rules {
            let object = NetfilterObjects.makeRule(rule, setIDs: setIDs)
            defer { nftnl_rule_free(object) }
            batch.add(
                NFT_MSG_NEWRULE,
                flags: NLM_F_CREATE | NLM_F_APPEND,
                object: "add rule \"\(rule.comment)\" to chain \(rule.chain)"
            ) { header in
                nftnl_rule_nlmsg_build_payload(header, object)
            }
        }
        let socket = try NetlinkSocket()
        try socket.send(try batch.finish(), operation: "send the rule set")
        try socket.awaitAcknowledgements(batch.pending)
    }

    /// Deletes the table. Returns false when there was none (which is not an error).
    @discardableResult
    public static func remove() throws(NetfilterError) -> Bool {
        let existed = try exists()
        let batch = NetfilterBatch()
        let table = "table inet \(CaptureRuleSet.tableName)"
        batch.add(NFT_MSG_NEWTABLE, flags: NLM_F_CREATE, object: "look up \(table)", build: buildTable)
        batch.add(NFT_MSG_DELTABLE, flags: 0, object: "delete \(table)", build: buildTable)
        let socket = try NetlinkSocket()
        try socket.send(try batch.finish(), operation: "send the delete")
        try socket.awaitAcknowledgements(batch.pending)
        return existed
    }

    /// Whether the table exists in this namespace.
    public static func exists() throws(NetfilterError) -> Bool {
        do {
            _ = try dump(NFT_MSG_GETTABLE, flags: 0, operation: "read table inet \(CaptureRuleSet.tableName)") {
                buildTable($0)
            }
            return true
        } catch  where error.errno == ENOENT {
            return false
        }
    }

    /// The table's rules with their counters, read back from the kernel; nil when the
    /// table does not exist.
    public static func rules() throws(NetfilterError) -> [RuleCounters]? {
        guard try exists() else { return nil }
        let filter = nftnl_rule_alloc()!
        defer { nftnl_rule_free(filter) }
        nftnl_rule_set_str(filter, netfilterU16(NFTNL_RULE_TABLE), CaptureRuleSet.tableName)
        let replies = try dump(NFT_MSG_GETRULE, flags: NLM_F_DUMP, operation: "list the rules") { header in
            nftnl_rule_nlmsg_build_payload(header, filter)
        }
        return replies.compactMap(NetfilterObjects.parseRule)
    }

    private static func buildTable(_ header: UnsafeMutablePointer<nlmsghdr>) {
        let table = nftnl_table_alloc()!
        defer { nftnl_table_free(table) }
        nftnl_table_set_str(table, netfilterU16(NFTNL_TABLE_NAME), CaptureRuleSet.tableName)
        nftnl_table_nlmsg_build_payload(header, table)
    }

    private static func dump(
        _ type: nf_tables_msg_types,
        flags: Int32,
        operation: String,
        build: (UnsafeMutablePointer<nlmsghdr>) -> Void
    ) throws(NetfilterError) -> [[UInt8]] {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 8)
        defer { buffer.deallocate() }
        let header = nftnl_nlmsg_build_hdr(
            buffer.assumingMemoryBound(to: CChar.self),
            netfilterU16(type),
            NetfilterBatch.family,
            UInt16(flags | NLM_F_ACK),
            UInt32(truncatingIfNeeded: time(nil))
        )!
        build(header)
        let socket = try NetlinkSocket()
        return try socket.dump(
            UnsafeRawBufferPointer(start: buffer, count: Int(header.pointee.nlmsg_len)),
            operation: operation
        )
    }
}
