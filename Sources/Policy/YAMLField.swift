import Yams

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

/// A YAML node with the path that led to it, so that every error names its place.
///
/// Scalars stay strings until a field asks for a type: composed with the basic
/// resolver, `0x50`, `1_000`, `on` or `1:30` are never silently turned into numbers or
/// booleans.
public struct YAMLField {
    public let node: Node
    public let path: String
    public let file: String

    public init(node: Node, path: String = "", file: String) {
        self.node = node
        self.path = path
        self.file = file
    }

    /// Every document of a YAML (or JSON) text; an error names the file.
    public static func documents(_ text: String, file: String) throws(LocatedError) -> [YAMLField] {
        do {
            // The parser, not `compose_all`: its lazy sequence ends quietly at a syntax
            // error, which would read a broken file as an empty one.
            let parser = try Parser(yaml: text, resolver: .basic)
            var documents: [YAMLField] = []
            while let node = try parser.nextRoot() {
                documents.append(YAMLField(node: node, file: file))
            }
            return documents
        } catch let error as YamlError {
            throw LocatedError(file: file, line: Self.line(of: error), field: "", reason: "not valid YAML: \(error)")
        } catch {
            throw LocatedError(file: file, line: nil, field: "", reason: "not valid YAML: \(error)")
        }
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
            return try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw LocatedError(file: path, line: nil, field: "", reason: "cannot read: \(error.localizedDescription)")
        }
    }

    private static func line(of error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default:
            return nil
        }
    }

    public var line: Int? { node.mark?.line }

    public func error(_ reason: String) -> LocatedError {
        LocatedError(file: file, line: line, field: path, reason: reason)
    }

    public func child(_ node: Node, _ key: String) -> YAMLField {
        YAMLField(node: node, path: path.isEmpty ? key : "\(path).\(key)", file: file)
    }

    public func mapping(allowed: Set<String>) throws(LocatedError) -> YAMLMapping {
        guard let mapping = node.mapping else { throw error("must be a mapping") }
        var pairs: [(key: String, value: Node)] = []
        pairs.reserveCapacity(mapping.count)
        for (key, value) in mapping {
            guard let name = key.string else { throw error("keys must be strings") }
            guard allowed.contains(name) else {
                throw child(value, name).error("unknown field (known: \(allowed.sorted().joined(separator: ", ")))")
            }
            pairs.append((name, value))
        }
        return YAMLMapping(owner: self, pairs: pairs)
    }

    public func sequence() throws(LocatedError) -> [YAMLField] {
        guard let sequence = node.sequence else { throw error("must be a list") }
        return sequence.enumerated().map { YAMLField(node: $1, path: "\(path)[\($0)]", file: file) }
    }

    public func string() throws(LocatedError) -> String {
        guard let scalar = node.scalar else { throw error("must be a string") }
        return scalar.string
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
        guard let mapping = node.mapping else { throw error("must be a mapping") }
        var labels: [String: String] = [:]
        for (key, value) in mapping {
            guard let key = key.string, let value = value.scalar?.string else {
                throw error("labels are string keys and string values")
            }
            labels[key] = value
        }
        return labels
    }

    public func strings() throws(LocatedError) -> [String] {
        try sequence().map { item throws(LocatedError) in try item.string() }
    }

    /// A plain decimal integer (not `0x50`, `1_000` or `1:30`).
    public func integer() throws(LocatedError) -> Int {
        guard let scalar = node.scalar, let value = Int(scalar.string) else {
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
    /// The pairs with their keys as strings: a policy mapping has a handful of keys, so
    /// a scan beats hashing (and Yams' own subscript builds a node per lookup).
    private let pairs: [(key: String, value: Node)]

    init(owner: YAMLField, pairs: [(key: String, value: Node)]) {
        self.owner = owner
        self.pairs = pairs
    }

    public func optional(_ key: String) -> YAMLField? {
        pairs.first { $0.key == key }.map { owner.child($0.value, key) }
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
