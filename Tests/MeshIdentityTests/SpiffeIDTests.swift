import MeshIdentity
import Testing

@Suite struct SpiffeIDTests {
    @Test(arguments: [
        "spiffe://example.org/ns/default/sa/orders",
        "spiffe://example.org",
        "spiffe://a-b_c.d/x.y-z_1/A",
    ])
    func acceptsValid(_ text: String) throws {
        let id = try SpiffeID(text)
        #expect(id.description == text)
    }

    @Test(arguments: [
        ("http://example.org/ns/a/sa/b", "scheme"),
        ("spiffe://", "empty"),
        ("spiffe://Example.org/x", "trust domain"),
        ("spiffe://example.org:8080/x", "trust domain"),
        ("spiffe://user@example.org/x", "trust domain"),
        ("spiffe://example.org/", "empty path segment"),
        ("spiffe://example.org//x", "empty path segment"),
        ("spiffe://example.org/x/", "empty path segment"),
        ("spiffe://example.org/./x", "'.'"),
        ("spiffe://example.org/../x", "'.'"),
        ("spiffe://example.org/x?q=1", "path may hold"),
        ("spiffe://example.org/x#f", "path may hold"),
        ("spiffe://example.org/x%20y", "path may hold"),
    ])
    func rejectsInvalid(_ text: String, _ why: String) {
        #expect {
            try SpiffeID(text)
        } throws: { error in
            let error = error as! IdentityError
            return error.code == .invalidSpiffeID && error.reason.contains(why)
        }
    }

    @Test func rejectsOverlong() {
        let text = "spiffe://example.org/" + String(repeating: "a", count: 2100)
        #expect(throws: IdentityError.self) { try SpiffeID(text) }
    }

    @Test func workloadParts() throws {
        let id = try SpiffeID(trustDomain: TrustDomain("example.org"), namespace: "shop", serviceAccount: "orders")
        #expect(id.description == "spiffe://example.org/ns/shop/sa/orders")
        #expect(id.namespace == "shop")
        #expect(id.serviceAccount == "orders")
        #expect(try SpiffeID("spiffe://example.org/other/path").namespace == nil)
    }
}

@Suite struct DurationStringTests {
    @Test(arguments: [
        ("24h", 86_400.0), ("720h", 2_592_000.0), ("90s", 90.0), ("1h30m", 5400.0), ("250ms", 0.25), ("10d", 864_000.0),
    ])
    func parses(_ text: String, _ seconds: Double) {
        #expect(DurationString.parse(text) == seconds)
    }

    @Test(arguments: ["", "h", "10", "10x", "-5s", "1 h", "s10"])
    func rejects(_ text: String) {
        #expect(DurationString.parse(text) == nil)
    }

    @Test func formats() {
        #expect(DurationString.format(5400) == "1h30m")
        #expect(DurationString.format(0) == "0s")
    }
}
