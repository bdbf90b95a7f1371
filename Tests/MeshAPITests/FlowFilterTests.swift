import Foundation
import Testing

@testable import MeshAPI

@Suite("Flow filters")
struct FlowFilterTests {
    let now = Date(timeIntervalSince1970: 1_795_000_100)

    func filter(_ query: String) throws -> FlowFilter {
        try FlowFilter(query: QueryString.decode(query[...]))
    }

    @Test("an empty filter matches everything")
    func empty() throws {
        #expect(try filter("").matches(sampleFlow(), now: now))
    }

    @Test(
        "identity and address patterns",
        arguments: [
            ("from=spiffe://example.org/ns/shop/sa/frontend", true),
            ("from=spiffe://example.org/ns/shop/*", true),
            ("from=spiffe://example.org/ns/other/*", false),
            ("from=frontend", true),
            ("from=front", false),
            ("from=10.0.0.7", true),
            ("from=10.0.0.*", true),
            ("from=10.0.0.8", false),
            ("to=orders", true),
            ("to=orders.shop", true),
            ("to=127.0.0.1:8080", true),
            ("to=frontend", false),
            ("service=orders.*", true),
            ("service=payments.shop", false),
            ("from=unauthenticated", false),
        ]
    )
    func patterns(query: String, expected: Bool) throws {
        #expect(try filter(query).matches(sampleFlow(), now: now) == expected)
    }

    @Test("port, verdict, protocol and policy are exact or glob on their field")
    func fields() throws {
        let flow = sampleFlow()
        #expect(try filter("port=8080").matches(flow, now: now))
        #expect(try !filter("port=8081").matches(flow, now: now))
        #expect(try filter("verdict=allowed").matches(flow, now: now))
        #expect(try !filter("verdict=denied").matches(flow, now: now))
        #expect(try filter("protocol=tcp").matches(flow, now: now))
        #expect(try !filter("protocol=http").matches(flow, now: now))
        #expect(try filter("policy=shop/orders-api").matches(flow, now: now))
        #expect(try filter("policy=shop/*").matches(flow, now: now))
        #expect(try !filter("policy=default-deny").matches(flow, now: now))
        #expect(try filter("port=8080&verdict=allowed&from=frontend").matches(flow, now: now))
        #expect(try !filter("port=8080&verdict=denied&from=frontend").matches(flow, now: now), "every field must match")
    }

    @Test("HTTP status and request policies match any request of the flow")
    func http() throws {
        let flow = sampleFlow(http: [
            HTTPExchange(
                method: "GET",
                authority: nil,
                path: "/a",
                status: 200,
                verdict: .allowed,
                policy: "shop/orders-api"
            ),
            HTTPExchange(
                method: "GET",
                authority: nil,
                path: "/b",
                status: 403,
                verdict: .denied,
                policy: "default-deny"
            ),
        ])
        #expect(try filter("http_status=403").matches(flow, now: now))
        #expect(try filter("http_status=4xx").matches(flow, now: now))
        #expect(try filter("http_status=2XX").matches(flow, now: now))
        #expect(try !filter("http_status=404").matches(flow, now: now))
        #expect(try !filter("http_status=5xx").matches(flow, now: now))
        #expect(try filter("policy=default-deny").matches(flow, now: now))
        #expect(try !filter("http_status=200").matches(sampleFlow(), now: now), "a TCP flow has no status")
    }

    @Test("since keeps open flows and flows that ended inside the window")
    func since() throws {
        let recent = sampleFlow(end: now.addingTimeInterval(-30))
        let old = sampleFlow(end: now.addingTimeInterval(-600))
        let open = sampleFlow(start: now.addingTimeInterval(-3600), end: nil)
        let window = try filter("since=60")
        #expect(window.matches(recent, now: now))
        #expect(!window.matches(old, now: now))
        #expect(window.matches(open, now: now))
    }

    @Test("limit keeps the newest matches in start order")
    func limit() throws {
        let flows = (1...10).map { sampleFlow(id: UInt64($0), verdict: $0 % 2 == 0 ? .denied : .allowed) }
        let result = try filter("verdict=denied&limit=3").apply(flows, now: now)
        #expect(result.map(\.id) == [6, 8, 10])
        #expect(try filter("limit=100").apply(flows, now: now).count == 10)
    }

    @Test(
        "bad values are refused with the parameter named",
        arguments: [
            "port=0", "port=70000", "port=x", "verdict=maybe", "protocol=udp", "http_status=42", "http_status=6xx",
            "since=-1", "since=abc", "limit=0",
        ]
    )
    func badValues(query: String) {
        let error = #expect(throws: FlowFilter.Error.self) { try filter(query) }
        #expect(error?.parameter == String(query.prefix { $0 != "=" }))
    }

    @Test("a filter survives its query string, escapes included")
    func queryRoundTrip() throws {
        var original = FlowFilter()
        original.from = "spiffe://example.org/ns/a b/*"
        original.to = "x&y=z"
        original.service = "orders.shop"
        original.port = 443
        original.verdict = .revoked
        original.policy = "shop/p"
        original.protocol = "http"
        original.httpStatus = "5xx"
        original.since = 90
        original.limit = 5
        let query = QueryString.encode(original.queryItems)
        #expect(!query.contains(" ") && !query.contains("x&y"))
        #expect(try FlowFilter(query: QueryString.decode(query[...])) == original)
    }

    @Test("glob edge cases")
    func glob() {
        #expect(FlowFilter.glob("*", ""))
        #expect(FlowFilter.glob("a*b*c", "aXXbYYc"))
        #expect(!FlowFilter.glob("a*b*c", "aXXcYYb"))
        #expect(FlowFilter.glob("ab*", "ab"))
        #expect(!FlowFilter.glob("a*a", "a"))
        #expect(FlowFilter.host(of: "[::1]:80") == "::1")
    }
}
