import Testing

@testable import MeshAPI

/// The hand-written formatting that replaced Foundation's `String(format:)` and
/// percent-encoding (the sidecar links only FoundationEssentials).
@Suite("Text formats")
struct TextFormatTests {
    @Test("byte counts as beectl flows prints them")
    func bytes() {
        #expect(FlowListing.bytes(0) == "0")
        #expect(FlowListing.bytes(950) == "950")
        #expect(FlowListing.bytes(1024) == "1.0K")
        #expect(FlowListing.bytes(1229) == "1.2K")
        #expect(FlowListing.bytes(10 * 1024 - 1) == "10.0K")
        #expect(FlowListing.bytes(57_000) == "55K")
        #expect(FlowListing.bytes(3_565_158) == "3.4M")
        #expect(FlowListing.bytes(1_181_116_006) == "1.1G")
    }

    @Test("durations as beectl flows prints them")
    func durations() {
        #expect(FlowListing.duration(0.00085) == "850µs")
        #expect(FlowListing.duration(0.012) == "12ms")
        #expect(FlowListing.duration(1.5) == "1.50s")
        #expect(FlowListing.duration(0.999_9) == "1000ms")
        #expect(FlowListing.duration(59.996) == "60.00s")
        #expect(FlowListing.duration(125) == "2m05s")
        #expect(FlowListing.duration(3720) == "1h02m")
        #expect(FlowListing.duration(90_061) == "25h01m")
    }

    @Test("fixed decimals carry into the integer part")
    func fixed() {
        #expect(FlowListing.fixed(0, digits: 2) == "0.00")
        #expect(FlowListing.fixed(0.05, digits: 2) == "0.05")
        #expect(FlowListing.fixed(9.96, digits: 1) == "10.0")
        #expect(FlowListing.fixed(12.345, digits: 1) == "12.3")
    }

    @Test("query strings: UTF-8 escaped, + and %20 are spaces, a broken escape stands as it is")
    func queryStrings() {
        #expect(QueryString.encode([("to", "✓ a&b=c/d:*")]) == "to=%E2%9C%93%20a%26b%3Dc/d:*")
        #expect(QueryString.decode("to=%E2%9C%93+a%20b")[0].value == "✓ a b")
        #expect(QueryString.decode("a=%zz+x")[0].value == "%zz x")
        #expect(QueryString.decode("a=%4")[0].value == "%4")
        #expect(QueryString.decode("a=%FF")[0].value == "%FF")
        #expect(QueryString.decode("flag")[0] == ("flag", ""))
        let text = "spiffe://example.org/ns/ä ö/sa/x?y#z%"
        #expect(QueryString.decode(QueryString.encode([("v", text)])[...])[0].value == text)
    }
}
