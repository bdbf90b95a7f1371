import MeshNet

/// A file, line, field and reason: how every configuration and policy error reads
/// (`policies/orders.yaml:12: spec.rules[0].to[0].ports[1]: port must be 1-65535`).
public struct LocatedError: Error, Sendable, Equatable, CustomStringConvertible {
    public let file: String
    public let line: Int?
    public let field: String
    public let reason: String

    public init(file: String, line: Int?, field: String, reason: String) {
        self.file = file
        self.line = line
        self.field = field
        self.reason = reason
    }

    public var description: String {
        let location = line.map { "\(file):\($0)" } ?? file
        return field.isEmpty ? "\(location): \(reason)" : "\(location): \(field): \(reason)"
    }
}

/// A node of a YAML document, read as a configuration field: every error names the
/// file, the line and the field's path.
///
/// Scalars stay strings until a field asks for a type: `0x50`, `1_000`, `on` or `1:30`
/// are never silently turned into numbers or booleans.
public struct YAMLField {
    let tree: YAMLTree
    let node: Int32

    init(tree: YAMLTree, node: Int32) {
        self.tree = tree
        self.node = node
    }

    /// Every document of a YAML (or JSON) text; an error names the file.
    public static func documents(_ text: String, file: String) throws(LocatedError) -> [YAMLField] {
        try YAMLTree.documents(text, file: file).map { YAMLField(tree: $0, node: YAMLTree.root) }
    }

    /// The one document of a configuration text (none or several is an error).
    public static func singleDocument(_ text: String, file: String) throws(LocatedError) -> YAMLField {
        let documents = try documents(text, file: file)
        guard let document = documents.first else {
            throw LocatedError(file: file, line: nil, field: "", reason: "empty document")
        }
        guard documents.count == 1 else {
            throw documents[1].error("one document expected, found \(documents.count)")
        }
        return document
    }

    /// A file's text; an unreadable file is an error naming it.
    public static func read(_ path: String) throws(LocatedError) -> String {
        do {
            return try SystemFile.read(path, limit: 16 << 20)
        } catch {
            throw LocatedError(file: path, line: nil, field: "", reason: error.reason)
        }
    }

    public var file: String { tree.file }

    /// `spec.rules[0].to[0]`; "" for a document.
    public var path: String { tree.path(node) }

    public var line: Int? { tree.line(node) }

    public var isMapping: Bool { tree.kind(node) == .mapping }

    /// An empty mapping or an empty scalar (a document that holds nothing).
    public var isEmpty: Bool {
        tree.kind(node) == .sequence ? false : tree.childRange(node).isEmpty && (tree.string(node) ?? "").isEmpty
    }

    public func error(_ reason: String) -> LocatedError {
        LocatedError(file: file, line: line, field: path, reason: reason)
    }

    /// A mapping whose keys are all strings among `allowed`.
    public func mapping(allowed: some Collection<String>) throws(LocatedError) -> YAMLMapping {
        guard tree.kind(node) == .mapping else { throw error("must be a mapping") }
        let items = tree.childRange(node)
        for position in stride(from: items.lowerBound, to: items.upperBound, by: 2) {
            guard let name = tree.string(tree.children[position]) else { throw error("keys must be strings") }
            guard allowed.contains(name) else {
                let value = YAMLField(tree: tree, node: tree.children[position + 1])
                throw value.error("unknown field (known: \(allowed.sorted().joined(separator: ", ")))")
            }
        }
        return YAMLMapping(owner: self)
    }

    public func sequence() throws(LocatedError) -> [YAMLField] {
        guard tree.kind(node) == .sequence else { throw error("must be a list") }
        return tree.childRange(node).map { YAMLField(tree: tree, node: tree.children[$0]) }
    }

    public func string() throws(LocatedError) -> String {
        guard let text = tree.string(node) else { throw error("must be a string") }
        return text
    }

    /// The string, turned into a value by `make`; its error becomes this field's error.
    public func parse<Value>(_ make: (String) throws -> Value) throws(LocatedError) -> Value {
        let text = try string()
        do {
            return try make(text)
        } catch let failure as CustomStringConvertible {
            throw error(failure.description)
        } catch {
            throw self.error("\(error)")
        }
    }

    /// A mapping of string keys to string values (labels).
    public func labels() throws(LocatedError) -> [String: String] {
        guard tree.kind(node) == .mapping else { throw error("must be a mapping") }
        let items = tree.childRange(node)
        var labels: [String: String] = [:]
        for position in stride(from: items.lowerBound, to: items.upperBound, by: 2) {
            guard let key = tree.string(tree.children[position]), let value = tree.string(tree.children[position + 1])
            else {
                throw error("labels are string keys and string values")
            }
            labels[key] = value
        }
        return labels
    }

    public func strings() throws(LocatedError) -> [String] {
        try sequence().map { item throws(LocatedError) in try item.string() }
    }

    /// A plain decimal integer (not `0x50`, `1_000`, `1:30` or `+80`).
    public func integer() throws(LocatedError) -> Int {
        guard let text = tree.string(node), text.first != "+", let value = Int(text) else {
            throw error("must be a decimal integer")
        }
        return value
    }

    public func port() throws(LocatedError) -> UInt16 {
        let value = try integer()
        guard (1...65535).contains(value) else { throw error("port must be 1-65535, got \(value)") }
        return UInt16(value)
    }

    /// `true` or `false` only.
    public func bool() throws(LocatedError) -> Bool {
        switch try string() {
        case "true": return true
        case "false": return false
        case let other: throw error("must be true or false, got '\(other)'")
        }
    }
}

/// The keys of a mapping, read with their paths.
public struct YAMLMapping {
    public let owner: YAMLField

    init(owner: YAMLField) {
        self.owner = owner
    }

    /// A mapping has a handful of keys: a scan beats hashing.
    public func optional(_ key: String) -> YAMLField? {
        let tree = owner.tree
        let items = tree.childRange(owner.node)
        for position in stride(from: items.lowerBound, to: items.upperBound, by: 2)
        where tree.scalar(tree.children[position], is: key) {
            return YAMLField(tree: tree, node: tree.children[position + 1])
        }
        return nil
    }

    public func required(_ key: String) throws(LocatedError) -> YAMLField {
        guard let field = optional(key) else {
            throw LocatedError(
                file: owner.file,
                line: owner.line,
                field: owner.path.isEmpty ? key : "\(owner.path).\(key)",
                reason: "is required"
            )
        }
        return field
    }
}
