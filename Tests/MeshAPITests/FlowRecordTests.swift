import Foundation
import Testing

@testable import MeshAPI

/// A flow with every field set, for round trips and filters.
func sampleFlow(
    id: UInt64 = 7,
    start: Date = Date(timeIntervalSince1970: 1_795_000_000.25),
    end: Date? = Date(timeIntervalSince1970: 1_795_000_001.75),
    verdict: FlowRecord.Verdict = .allowed,
    http: [HTTPExchange] = []
) -> FlowRecord {
    var flow = FlowRecord(
        id: id,
        start: start,
        direction: .inbound,
        source: .init(address: "10.0.0.7:41234", identity: "spiffe://example.org/ns/shop/sa/frontend"),
        destination: .init(
            service: "orders.shop",
            address: "127.0.0.1:8080",
            port: 8080,
            identity: "spiffe://example.org/ns/shop/sa/orders"
        ),
        protocol: http.isEmpty ? "tcp" : "http",
        verdict: verdict
    )
    flow.end = end
    flow.tls = .init(version: "TLSv1.3", cipher: "TLS_AES_128_GCM_SHA256")
    flow.policy = "shop/orders-api"
    flow.rule = 0
    flow.audits = ["shop/audit-all#1"]
    flow.bytesIn = 1234
    flow.bytesOut = 56789
    flow.closeReason = end == nil ? nil : .done
    flow.http = http
    flow.requests = UInt64(http.count)
    return flow
}

@Suite("Flow JSON")
struct FlowJSONTests {
    @Test("a flow with every field survives encode and decode")
    func roundTrip() throws {
        let flow = sampleFlow(http: [
            HTTPExchange(
                method: "GET",
                authority: "orders",
                path: "/api/orders?id=1",
                status: 200,
                latency: 0.0021,
                verdict: .allowed,
                policy: "shop/orders-api",
                rule: 0
            ),
            HTTPExchange(
                method: "DELETE",
                authority: nil,
                path: "/api/x",
                status: 403,
                verdict: .denied,
                policy: "default-deny"
            ),
        ])
        let data = try MeshJSON.encoder().encode(flow)
        #expect(try MeshJSON.decoder().decode(FlowRecord.self, from: data) == flow)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains(#""start":"2026-11-18T"#))
        #expect(text.contains(#""duration":1.5"#))
        #expect(text.contains("spiffe://example.org/ns/shop/sa/frontend"), "slashes are not escaped")
    }

    @Test("an open flow has no end, duration or close reason in its JSON")
    func openFlow() throws {
        let flow = sampleFlow(end: nil)
        let text = String(decoding: try MeshJSON.encoder().encode(flow), as: UTF8.self)
        #expect(!text.contains("\"end\""))
        #expect(!text.contains("duration"))
        #expect(!text.contains("closeReason"))
        #expect(try MeshJSON.decoder().decode(FlowRecord.self, from: Data(text.utf8)) == flow)
    }

    @Test("every follow event survives encode and decode, one line each")
    func events() throws {
        let flow = sampleFlow()
        let request = HTTPExchange(
            method: "GET",
            authority: "a",
            path: "/",
            status: 404,
            verdict: .allowed,
            policy: "p/q"
        )
        for event in [FlowEvent.flowStart(flow), .httpRequest(flow, request), .flowEnd(flow), .overrun(dropped: 12)] {
            let line = try MeshJSON.line(event)
            #expect(line.last == UInt8(ascii: "\n"))
            #expect(line.dropLast().contains(UInt8(ascii: "\n")) == false)
            #expect(try MeshJSON.decoder().decode(FlowEvent.self, from: Data(line)) == event)
            #expect(
                String(decoding: line, as: UTF8.self).hasPrefix("{")
                    && String(decoding: line, as: UTF8.self).contains("\"event\":\"\(event.name)\"")
            )
        }
        #expect(throws: DecodingError.self) {
            try MeshJSON.decoder().decode(FlowEvent.self, from: Data(#"{"event":"flow-middle"}"#.utf8))
        }
    }

    @Test("a flow list survives encode and decode")
    func list() throws {
        let list = FlowList(
            flows: [sampleFlow(id: 1), sampleFlow(id: 2, end: nil)],
            capacity: 8,
            evicted: 3,
            overruns: 1,
            recording: true
        )
        #expect(try MeshJSON.decoder().decode(FlowList.self, from: try MeshJSON.encoder().encode(list)) == list)
    }
}

@Suite("Timestamps")
struct TimestampTests {
    @Test(
        "format and parse agree with the calendar",
        arguments: [
            (0.0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400.5, "2000-02-29T00:00:00.500000Z"),
            (1_795_000_000.123456, "2026-11-18T11:06:40.123456Z"),
            (-1.0, "1969-12-31T23:59:59.000000Z"),
            (4_102_444_799.999999, "2099-12-31T23:59:59.999999Z"),
        ]
    )
    func calendar(seconds: Double, text: String) throws {
        #expect(Timestamp.format(Date(timeIntervalSince1970: seconds)) == text)
        let parsed = try #require(Timestamp.parse(text))
        #expect(abs(parsed.timeIntervalSince1970 - seconds) < 0.000_001)
    }

    @Test("offsets and a missing fraction parse; malformed text does not")
    func parsing() {
        #expect(
            Timestamp.parse("2026-11-27T23:00:00+01:00")?.timeIntervalSince1970
                == Timestamp.parse("2026-11-27T22:00:00Z")?.timeIntervalSince1970
        )
        for bad in [
            "", "2026-11-27", "2026-11-27T25:00:00Z", "2026-13-01T00:00:00Z", "2026-11-27T22:00:00",
            "2026-11-27T22:00:00.Z", "2026-11-27T22:00:00Zjunk",
        ] {
            #expect(Timestamp.parse(bad) == nil, "\(bad)")
        }
    }
}
