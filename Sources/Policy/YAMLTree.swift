import CLibYAML

/// One YAML document, composed from libyaml's events into flat arrays.
///
/// Built for reading configuration and policy files fast and safely:
/// - scalars stay strings (no tag resolution: `0x50`, `on` or `1:30` are text until a
///   field asks for a type);
/// - every node keeps its line and how it was reached, so that an error names its field
///   (`spec.rules[0].to[0].ports[1]`) without a path being built for the fields that are
///   read without error;
/// - an alias is a reference to the anchored node, not a copy, and a file whose
///   documents together would stand for more than ``expansionLimit`` nodes once their
///   aliases are expanded is refused (the "billion laughs"): whoever walks the trees of
///   one file never walks more than that;
/// - collections nest at most ``depthLimit`` deep;
/// - a mapping with the same key twice is refused.
public final class YAMLTree: Sendable {
    /// The most nodes the documents of one file may stand for, aliases expanded.
    public static let expansionLimit = 1_000_000
    /// The deepest nesting of collections.
    public static let depthLimit = 256

    enum Kind: UInt8 {
        case scalar
        case mapping
        case sequence
    }

    struct Node {
        var kind: Kind
        /// 1-based.
        var line: Int32
        /// The collection this node was written in; -1 for the root.
        var parent: Int32
        /// Its position among the parent's children (a mapping's are key, value, key...).
        var slot: Int32
        /// A scalar's index in `scalars`; a collection's first index in `children`.
        var first: Int32
        /// A collection's number of children (a mapping's is twice its pairs).
        var count: Int32
    }

    let nodes: [Node]
    let scalars: [String]
    let children: [Int32]
    public let file: String

    static let root: Int32 = 0

    init(nodes: [Node], scalars: [String], children: [Int32], file: String) {
        self.nodes = nodes
        self.scalars = scalars
        self.children = children
        self.file = file
    }

    /// Every document of a YAML (or JSON) text, in order; an error names the file and,
    /// where libyaml knows it, the line.
    public static func documents(_ text: String, file: String) throws(LocatedError) -> [YAMLTree] {
        let bytes = Array(text.utf8)
        let parser = UnsafeMutablePointer<yaml_parser_t>.allocate(capacity: 1)
        defer { parser.deallocate() }
        guard yaml_parser_initialize(parser) == 1 else {
            throw LocatedError(file: file, line: nil, field: "", reason: "cannot start the YAML parser (out of memory)")
        }
        defer { yaml_parser_delete(parser) }
        let result = bytes.withUnsafeBufferPointer { buffer in
            // The parser keeps a pointer to itself for its reader: it is allocated, not a
            // local, so that it never moves.
            yaml_parser_set_input_string(parser, buffer.baseAddress, buffer.count)
            return Result { () throws(LocatedError) in try compose(parser, file: file) }
        }
        return try result.get()
    }

    private static func compose(
        _ parser: UnsafeMutablePointer<yaml_parser_t>,
        file: String
    ) throws(LocatedError) -> [YAMLTree] {
        var documents: [YAMLTree] = []
        var budget = expansionLimit
        var builder = Builder(file: file, budget: budget)
        var event = yaml_event_t()
        while true {
            guard yaml_parser_parse(parser, &event) == 1 else { throw syntaxError(parser.pointee, file: file) }
            defer { yaml_event_delete(&event) }
            let line = Int32(clamping: event.start_mark.line + 1)
            switch event.type {
            case YAML_STREAM_END_EVENT:
                return documents
            case YAML_DOCUMENT_START_EVENT:
                builder = Builder(file: file, budget: budget)
            case YAML_DOCUMENT_END_EVENT:
                let (tree, spent) = try builder.finish()
                documents.append(tree)
                budget -= spent
            case YAML_SCALAR_EVENT:
                let scalar = event.data.scalar
                let value = String(
                    decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length),
                    as: UTF8.self
                )
                try builder.scalar(value, anchor: scalar.anchor, line: line)
            case YAML_SEQUENCE_START_EVENT:
                try builder.open(.sequence, anchor: event.data.sequence_start.anchor, line: line)
            case YAML_MAPPING_START_EVENT:
                try builder.open(.mapping, anchor: event.data.mapping_start.anchor, line: line)
            case YAML_SEQUENCE_END_EVENT, YAML_MAPPING_END_EVENT:
                try builder.close()
            case YAML_ALIAS_EVENT:
                try builder.alias(event.data.alias.anchor, line: line)
            default:
                continue
            }
        }
    }

    private static func syntaxError(_ parser: yaml_parser_t, file: String) -> LocatedError {
        let problem = parser.problem.map { String(cString: $0) } ?? "unknown error"
        var reason = "not valid YAML: \(problem)"
        if let context = parser.context {
            reason += " (\(String(cString: context)), from line \(parser.context_mark.line + 1))"
        }
        if parser.error == YAML_READER_ERROR {
            return LocatedError(file: file, line: nil, field: "", reason: reason + " at byte \(parser.problem_offset)")
        }
        let line = Int(parser.problem_mark.line) + 1
        return LocatedError(
            file: file,
            line: line,
            field: "",
            reason: reason + " at column \(parser.problem_mark.column + 1)"
        )
    }

    // MARK: Reading

    func kind(_ node: Int32) -> Kind { nodes[Int(node)].kind }

    func line(_ node: Int32) -> Int { Int(nodes[Int(node)].line) }

    /// A scalar's text, nil for a collection.
    func string(_ node: Int32) -> String? {
        let entry = nodes[Int(node)]
        return entry.kind == .scalar ? scalars[Int(entry.first)] : nil
    }

    /// Where a collection's children (a mapping's alternate key and value) lie in
    /// `children`; empty for a scalar. A range, not a slice: a slice would retain the
    /// array for every field read.
    func childRange(_ node: Int32) -> Range<Int> {
        let entry = nodes[Int(node)]
        guard entry.kind != .scalar else { return 0..<0 }
        return Int(entry.first)..<Int(entry.first + entry.count)
    }

    /// Whether `node` is a scalar reading `text`.
    func scalar(_ node: Int32, is text: String) -> Bool {
        let entry = nodes[Int(node)]
        return entry.kind == .scalar && scalars[Int(entry.first)] == text
    }

    /// The field path that leads to a node: `spec.rules[0].to[0].ports[1]`, "" for the
    /// root. An aliased node is named where its anchor was written.
    func path(_ node: Int32) -> String {
        var components: [String] = []
        var current = node
        while true {
            let entry = nodes[Int(current)]
            guard entry.parent >= 0 else { break }
            let parent = nodes[Int(entry.parent)]
            if parent.kind == .sequence {
                components.append("[\(entry.slot)]")
            } else if entry.slot % 2 == 1 {
                let key = children[Int(parent.first + entry.slot - 1)]
                components.append("." + (string(key) ?? "<key>"))
            }
            current = entry.parent
        }
        var path = components.reversed().joined()
        if path.hasPrefix(".") { path.removeFirst() }
        return path
    }

    // MARK: Composing

    /// The nodes of the document being read, the children of its open collections, and
    /// its anchors.
    private struct Builder {
        let file: String
        var nodes: [Node] = []
        var scalars: [String] = []
        var children: [Int32] = []
        /// What each node stands for once its aliases are expanded.
        var sizes: [Int] = []
        /// Nodes this document may still stand for (what the file's earlier documents
        /// left of `expansionLimit`).
        let budget: Int
        /// Per node: a collection still open (an alias to it would be a cycle).
        var isOpen: [Bool] = []
        /// The children read so far of every open collection, innermost last.
        var pending: [Int32] = []
        var open: [(node: Int32, start: Int)] = []
        var anchors: [String: Int32] = [:]

        init(file: String, budget: Int) {
            self.file = file
            self.budget = budget
            nodes.reserveCapacity(256)
            scalars.reserveCapacity(128)
            children.reserveCapacity(256)
        }

        mutating func scalar(_ value: String, anchor: UnsafeMutablePointer<yaml_char_t>?, line: Int32)
            throws(LocatedError)
        {
            scalars.append(value)
            let node = Node(kind: .scalar, line: line, parent: -1, slot: 0, first: Int32(scalars.count - 1), count: 0)
            try add(node, anchor: anchor)
        }

        private func tooLarge(at line: Int32) -> LocatedError {
            LocatedError(
                file: file,
                line: Int(line),
                field: "",
                reason: "this file stands for more than \(YAMLTree.expansionLimit) nodes once its aliases are expanded"
            )
        }

        mutating func open(
            _ kind: Kind,
            anchor: UnsafeMutablePointer<yaml_char_t>?,
            line: Int32
        ) throws(LocatedError) {
            guard open.count < YAMLTree.depthLimit else {
                throw LocatedError(
                    file: file,
                    line: Int(line),
                    field: "",
                    reason: "collections nested deeper than \(YAMLTree.depthLimit)"
                )
            }
            let index = try add(Node(kind: kind, line: line, parent: -1, slot: 0, first: 0, count: 0), anchor: anchor)
            isOpen[Int(index)] = true
            open.append((index, pending.count))
        }

        mutating func close() throws(LocatedError) {
            guard let (index, start) = open.popLast() else { return }
            let items = pending[start...]
            var size = 1
            for item in items { size += sizes[Int(item)] }
            guard size <= budget else { throw tooLarge(at: nodes[Int(index)].line) }
            sizes[Int(index)] = size
            isOpen[Int(index)] = false
            if nodes[Int(index)].kind == .mapping { try checkUniqueKeys(items) }
            nodes[Int(index)].first = Int32(children.count)
            nodes[Int(index)].count = Int32(items.count)
            children.append(contentsOf: items)
            pending.removeLast(pending.count - start)
        }

        mutating func alias(_ anchor: UnsafeMutablePointer<yaml_char_t>?, line: Int32) throws(LocatedError) {
            let name = anchor.map { String(cString: $0) } ?? ""
            guard let target = anchors[name] else {
                throw LocatedError(
                    file: file,
                    line: Int(line),
                    field: "",
                    reason: "not valid YAML: unknown alias '\(name)'"
                )
            }
            // An alias to a collection that is still open would be a cycle.
            guard !isOpen[Int(target)] else {
                throw LocatedError(
                    file: file,
                    line: Int(line),
                    field: "",
                    reason: "not valid YAML: alias '\(name)' refers to its own ancestor"
                )
            }
            pending.append(target)
        }

        /// The document, and the nodes it stands for.
        func finish() throws(LocatedError) -> (YAMLTree, spent: Int) {
            guard open.isEmpty, !nodes.isEmpty else {
                throw LocatedError(file: file, line: nil, field: "", reason: "not valid YAML: incomplete document")
            }
            guard sizes[Int(YAMLTree.root)] <= budget else { throw tooLarge(at: nodes[Int(YAMLTree.root)].line) }
            return (YAMLTree(nodes: nodes, scalars: scalars, children: children, file: file), sizes[Int(YAMLTree.root)])
        }

        /// Appends a node to the open collection. Nodes count against the budget as they
        /// are read, so that a huge flat list is refused before it is held.
        @discardableResult
        private mutating func add(
            _ node: Node,
            anchor: UnsafeMutablePointer<yaml_char_t>?
        ) throws(LocatedError) -> Int32 {
            guard nodes.count < budget else { throw tooLarge(at: node.line) }
            var node = node
            let index = Int32(nodes.count)
            if let (parent, start) = open.last {
                node.parent = parent
                node.slot = Int32(pending.count - start)
                pending.append(index)
            }
            nodes.append(node)
            sizes.append(1)
            isOpen.append(false)
            if let anchor { anchors[String(cString: anchor)] = index }
            return index
        }

        /// Keys are compared as written; a mapping has a handful, so pairs are compared
        /// directly, and hashed only when there are many.
        private func checkUniqueKeys(_ items: ArraySlice<Int32>) throws(LocatedError) {
            func text(_ key: Int32) -> String? {
                let node = nodes[Int(key)]
                return node.kind == .scalar ? scalars[Int(node.first)] : nil
            }
            let keys = stride(from: items.startIndex, to: items.endIndex, by: 2)
            var seen: Set<String>? = items.count > 32 ? [] : nil
            for position in keys {
                guard let name = text(items[position]) else { continue }
                let repeated: Bool
                if seen != nil {
                    repeated = !seen!.insert(name).inserted
                } else {
                    repeated = stride(from: items.startIndex, to: position, by: 2).contains { text(items[$0]) == name }
                }
                guard repeated else { continue }
                throw LocatedError(
                    file: file,
                    line: Int(nodes[Int(items[position])].line),
                    field: "",
                    reason: "not valid YAML: key '\(name)' appears twice in one mapping"
                )
            }
        }
    }
}
