import MeshTestSupport
import Testing

@testable import Proxy

/// Finding 2 of the node security review (c7e302b): HTTP path rules matched the raw
/// target, so `/public/../cgi-bin/hello` passed an ALLOW of `/public/*`, and
/// `/cgi-bin//hello`, `/cgi-bin/./hello` and `/%63gi-bin/hello` passed a DENY of
/// `/cgi-bin/hello`. Every spelling now reaches policy, and the app, as one path.
@Suite struct RequestTargetTests {
    @Test(arguments: [
        ("/public/../cgi-bin/hello", "/cgi-bin/hello"),
        ("/cgi-bin//hello", "/cgi-bin/hello"),
        ("/cgi-bin/./hello", "/cgi-bin/hello"),
        ("/%63gi-bin/hello", "/cgi-bin/hello"),
        ("/%2e%2e/%2E/x", "/x"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("///a", "/a"),
        ("/a/.b/..c/...", "/a/.b/..c/..."),
        ("/a%7e%5F%2d", "/a~_-"),
        ("/a%20b%c3%a4", "/a%20b%C3%A4"),
        ("/a?x=/../b&y=%2F", "/a?x=/../b&y=%2F"),
        ("/a/../b?q", "/b?q"),
        ("/", "/"),
        ("/api/orders/1", "/api/orders/1"),
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
        ("/a?b;c=d", "/a?b;c=d"),
    ])
    func spellingsOfOnePathBecomeThatPath(_ raw: String, _ expected: String) throws {
        let target = try RequestTarget(raw, method: "GET")
        #expect(target.target == expected)
        #expect(target.path == expected.split(separator: "?", maxSplits: 1).first!)
    }

    @Test(arguments: [
        ("/a%2fb", RequestTarget.Refusal.Code.encodedSeparator),
        // Path parameters: Tomcat, Jetty and Spring serve `/public/..;/admin` as `/admin`.
        ("/public/..;/admin", .invalidCharacter),
        ("/a;jsessionid=1", .invalidCharacter),
        ("/a%2Fb", .encodedSeparator),
        ("/a%5cb", .encodedSeparator),
        ("/a\\b", .invalidCharacter),
        ("/a b", .invalidCharacter),
        ("/a#b", .invalidCharacter),
        ("/a\u{7f}", .invalidCharacter),
        ("/ä", .invalidCharacter),
        ("/a%00", .invalidCharacter),
        ("/a%zz", .badPercentEncoding),
        ("/a%4", .badPercentEncoding),
        ("/a%", .badPercentEncoding),
        ("/a%4?b", .badPercentEncoding),
        ("/a?b c", .invalidCharacter),
        ("http://orders/x", .notOriginForm),
        ("orders:80", .notOriginForm),
        ("*", .notOriginForm),
        ("", .notOriginForm),
    ])
    func ambiguousTargetsAreRefused(_ raw: String, _ code: RequestTarget.Refusal.Code) {
        #expect {
            _ = try RequestTarget(raw, method: "GET")
        } throws: { error in
            (error as? RequestTarget.Refusal)?.code == code
        }
    }

    @Test func theAsteriskIsForOptionsOnly() throws {
        #expect(try RequestTarget("*", method: "OPTIONS").target == "*")
    }

    /// Against a reference written from RFC 3986 section 5.2.4's own steps (an input
    /// buffer consumed by rules A to E), on random targets over an alphabet rich in
    /// dots, slashes and escapes: the same answer, and normalizing twice changes
    /// nothing (so the fast path for normal targets agrees with the full one).
    @Test func agreesWithTheRFCsAlgorithmAndIsIdempotent() throws {
        let alphabet = [
            "/", "/", ".", "..", "a", "b", "%2e", "%2E", "%41", "%7e", "%20", "//", "/./", "/../", "?", "%2f",
        ]
        var random = SplitMix64(seed: 0x5EED_17)
        var checked = 0
        for _ in 0..<20_000 {
            let length = Int(random.next() % 10)
            let raw = "/" + (0..<length).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] }.joined()
            let target: RequestTarget
            do {
                target = try RequestTarget(raw, method: "GET")
            } catch {
                let path = raw.split(separator: "?", maxSplits: 1).first ?? ""
                #expect(path.lowercased().contains("%2f"), "\(raw) refused: \(error)")
                continue
            }
            let path = String(raw.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0])
            #expect(target.path == Self.reference(path), "seed 0x5EED_17, target \(raw)")
            #expect(try RequestTarget(target.target, method: "GET") == target, "not idempotent: \(raw)")
            checked += 1
        }
        #expect(checked > 10_000)
    }

    /// Decodes the unreserved escapes this test's alphabet uses, merges slashes, then
    /// removes dot segments exactly as RFC 3986 section 5.2.4 writes it.
    static func reference(_ raw: String) -> String {
        var text = raw.replacingOccurrences(of: "%2e", with: ".").replacingOccurrences(of: "%2E", with: ".")
            .replacingOccurrences(of: "%41", with: "A").replacingOccurrences(of: "%7e", with: "~")
        while text.contains("//") { text = text.replacingOccurrences(of: "//", with: "/") }
        var input = Substring(text)
        var output = ""
        while !input.isEmpty {
            if input.hasPrefix("../") {  // A
                input = input.dropFirst(3)
            } else if input.hasPrefix("./") {
                input = input.dropFirst(2)
            } else if input.hasPrefix("/./") {  // B
                input = input.dropFirst(2)
            } else if input == "/." {
                input = "/"
            } else if input.hasPrefix("/../") {  // C
                input = input.dropFirst(3)
                output = String(output[..<(output.lastIndex(of: "/") ?? output.startIndex)])
            } else if input == "/.." {
                input = "/"
                output = String(output[..<(output.lastIndex(of: "/") ?? output.startIndex)])
            } else if input == "." || input == ".." {  // D
                input = ""
            } else {  // E
                let start = input.hasPrefix("/") ? input.index(after: input.startIndex) : input.startIndex
                let end = input[start...].firstIndex(of: "/") ?? input.endIndex
                output += input[..<end]
                input = input[end...]
            }
        }
        return output.isEmpty ? "/" : output
    }
}
