import Foundation
import Testing

@testable import Policy

/// The YAML composer: what configuration and policy files are read with.
@Suite struct YAMLTreeTests {
    @Test func documentsLinesAndPaths() throws {
        let text = """
            # a comment
            kind: A
            spec:
              rules:
                - ports: [80, 443]
                  name: "quoted: yes"
            ---
            {"kind": "B", "list": [1, {"x": 'y'}]}
            """
        let documents = try YAMLField.documents(text, file: "f.yaml")
        #expect(documents.count == 2)
        let first = try documents[0].mapping(allowed: ["kind", "spec"])
        #expect(try first.required("kind").string() == "A")
        #expect(documents[0].line == 2)
        let rule = try first.required("spec").mapping(allowed: ["rules"]).required("rules").sequence()[0]
        let ports = try rule.mapping(allowed: ["ports", "name"]).required("ports").sequence()
        #expect(try ports.map { try $0.port() } == [80, 443])
        #expect(ports[1].path == "spec.rules[0].ports[1]")
        #expect(ports[1].line == 5)
        #expect(try rule.mapping(allowed: ["ports", "name"]).required("name").string() == "quoted: yes")

        let second = try documents[1].mapping(allowed: ["kind", "list"])
        #expect(documents[1].line == 8)
        let nested = try second.required("list").sequence()[1].mapping(allowed: ["x"]).required("x")
        #expect(try nested.string() == "y")
        #expect(nested.path == "list[1].x")
    }

    @Test func scalarsStayText() throws {
        let document = try YAMLField.singleDocument("a: 0x50\nb: on\nc: 1:30\nd: ~\ne:\nf: !!str 80\n", file: "f")
        let map = try document.mapping(allowed: ["a", "b", "c", "d", "e", "f"])
        #expect(
            try ["a", "b", "c", "d", "e", "f"].map { try map.required($0).string() } == [
                "0x50", "on", "1:30", "~", "", "80",
            ]
        )
        #expect(throws: LocatedError.self) { try map.required("a").integer() }
        #expect(throws: LocatedError.self) { try map.required("b").bool() }
    }

    @Test func emptyTextsAndDocuments() throws {
        #expect(try YAMLField.documents("", file: "f").isEmpty)
        #expect(try YAMLField.documents("# only a comment\n", file: "f").isEmpty)
        let empty = try YAMLField.documents("---\n---\n{}\n", file: "f")
        #expect(empty.count == 2 && empty.allSatisfy(\.isEmpty))
        #expect(try !YAMLField.singleDocument("[]", file: "f").isEmpty, "an empty list is a value")
    }

    @Test func aliasesReferToTheAnchoredNode() throws {
        let text = """
            base: &ports [80, 443]
            copy: *ports
            name: &n orders
            again: *n
            """
        let map = try YAMLField.singleDocument(text, file: "f").mapping(allowed: ["base", "copy", "name", "again"])
        let copy = try map.required("copy").sequence()
        #expect(try copy.map { try $0.port() } == [80, 443])
        #expect(copy[0].path == "base[0]", "an aliased node is named where its anchor was written")
        #expect(try map.required("again").string() == "orders")
    }

    @Test(arguments: [
        ("a: 1\nb: 2\na: 3\n", "f.yaml:3: not valid YAML: key 'a' appears twice"),
        ("x: {k: 1, k: 2}\n", "f.yaml:1: not valid YAML: key 'k' appears twice"),
        ("a: *nowhere\n", "f.yaml:1: not valid YAML: unknown alias 'nowhere'"),
        ("a: &x [1, *x]\n", "f.yaml:1: not valid YAML: alias 'x' refers to its own ancestor"),
        ("a: [1, 2\nb: 3\n", "f.yaml:2: not valid YAML:"),
        ("a: b\n  c: d\n", "f.yaml:2: not valid YAML:"),
        ("a: 'unterminated\n", "f.yaml:2: not valid YAML:"),
        ("- a\nb: c\n", "f.yaml:2: not valid YAML:"),
        ("a: \u{7}\n", "f.yaml: not valid YAML: control characters are not allowed"),
    ])
    func refusals(text: String, expected: String) {
        #expect {
            try YAMLField.documents(text, file: "f.yaml")
        } throws: { error in
            let description = "\(error)"
            if !description.hasPrefix(expected) { print("got: \(description)") }
            return description.hasPrefix(expected)
        }
    }

    @Test func duplicateKeysInALargeMappingAreFound() {
        var text = (0..<100).map { "key\($0): \($0)" }.joined(separator: "\n")
        text += "\nkey57: again\n"
        #expect {
            try YAMLField.documents(text, file: "f.yaml")
        } throws: { error in
            "\(error)".hasPrefix("f.yaml:101: not valid YAML: key 'key57' appears twice")
        }
    }

    /// Nine levels of ten aliases stand for a billion nodes in a few hundred bytes.
    @Test func aliasExpansionIsBounded() {
        var text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1...9 {
            let previous = "*a\(level - 1)"
            text += "a\(level): &a\(level) [" + Array(repeating: previous, count: 10).joined(separator: ", ") + "]\n"
        }
        let start = ContinuousClock.now
        #expect {
            try YAMLField.documents(text, file: "lol.yaml")
        } throws: { error in
            "\(error)".contains("this file stands for more than 1000000 nodes once its aliases are expanded")
        }
        #expect(ContinuousClock.now - start < .seconds(1))
        // Up to the limit, aliases are fine: five levels stand for 111,111 nodes.
        let small = text.split(separator: "\n").prefix(5).joined(separator: "\n")
        #expect(throws: Never.self) { try YAMLField.documents(small, file: "ok.yaml") }
    }

    /// The limit holds for a file, not per document: many small bombs add up.
    @Test func aliasExpansionIsBoundedPerFile() {
        // 123,461 nodes per document: eight fit in 1,000,000, nine do not.
        var document = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1...4 {
            document +=
                "a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ")
                + "]\n"
        }
        let eight = Array(repeating: document, count: 8).joined(separator: "---\n")
        #expect(throws: Never.self) { try YAMLField.documents(eight, file: "ok.yaml") }
        #expect {
            try YAMLField.documents(eight + "---\n" + document, file: "bombs.yaml")
        } throws: { error in
            "\(error)".contains("this file stands for more than 1000000 nodes")
        }
    }

    @Test func nestingIsBounded() {
        let deep = String(repeating: "[", count: 300) + String(repeating: "]", count: 300)
        #expect {
            try YAMLField.documents(deep, file: "deep.yaml")
        } throws: { error in
            "\(error)".hasPrefix("deep.yaml:1: collections nested deeper than 256")
        }
        let fine = String(repeating: "[", count: 200) + String(repeating: "]", count: 200)
        #expect(throws: Never.self) { try YAMLField.documents(fine, file: "fine.yaml") }
    }

    /// Random bytes and every prefix of a valid file: an error or a tree, never a crash.
    @Test func randomAndTruncatedInput() {
        let valid = """
            apiVersion: beemesh.io/v1
            kind: MeshPolicy
            metadata: {name: p, namespace: shop}
            spec:
              action: ALLOW
              rules:
                - from: [{identities: ["spiffe://td/ns/a/sa/*"]}]
                  to: [{ports: [80], methods: [GET], paths: ["/api/*"]}]
            """
        let bytes = Array(valid.utf8)
        var parsedPrefixes = 0
        for length in 0...bytes.count {
            let text = String(decoding: bytes[..<length], as: UTF8.self)
            if (try? PolicyDocuments.parse(text, file: "p.yaml")) != nil { parsedPrefixes += 1 }
        }
        #expect(parsedPrefixes > 0 && parsedPrefixes < bytes.count / 2)

        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("ab: -[]{},&*!|>'\"#\n\t ?%@`~".utf8)
        for _ in 0..<5000 {
            let length = Int.random(in: 0..<80, using: &generator)
            let noise = (0..<length).map { _ in alphabet.randomElement(using: &generator)! }
            _ = try? YAMLField.documents(String(decoding: noise, as: UTF8.self), file: "r.yaml")
            let mutated = bytes.enumerated().map { index, byte in
                index % 17 == length % 17 ? alphabet.randomElement(using: &generator)! : byte
            }
            _ = try? PolicyDocuments.parse(String(decoding: mutated, as: UTF8.self), file: "m.yaml")
        }
    }
}
