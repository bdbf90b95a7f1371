import Foundation
import MeshAPI
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import Testing

@testable import Proxy

/// The flow table without sockets: ring bounds, eviction and overrun counts, and what
/// follow readers receive.
@Suite struct FlowRecorderTests {
    static func record(_ id: UInt64) -> FlowRecord {
        FlowRecord(
            id: id,
            start: Date(timeIntervalSince1970: Double(id)),
            direction: .inbound,
            source: .init(address: nil, identity: "unauthenticated"),
            destination: .init(service: nil, address: nil, port: 80, identity: nil)
        )
    }

    @Test(arguments: [0, 1, 3, 8])
    func theRingKeepsTheNewestAndCountsEveryEviction(capacity: Int) {
        var ring = FlowRing(capacity: capacity)
        for id in 1...10 { ring.append(Self.record(UInt64(id))) }
        let kept = (1...10).suffix(capacity).map(UInt64.init)
        #expect(ring.records.map(\.id) == kept)
        #expect(ring.count == min(capacity, 10))
        #expect(ring.evicted == UInt64(10 - min(capacity, 10)))
        #expect(ring.records.count + Int(ring.evicted) == 10, "every flow is either kept or counted")
    }

    /// Opens and closes `count` flows on embedded channels.
    static func churn(_ recorder: FlowRecorder, count: Int, decide: Bool = true) throws {
        for _ in 0..<count {
            let channel = EmbeddedChannel()
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
            let flow = try #require(recorder.open(channel, direction: .inbound))
            if decide { flow.decided(.allowed, policy: "ns/p") }
            flow.received(fromSource: 10)
            flow.received(fromDestination: 20)
            _ = try? channel.finish()
        }
    }

    @Test func finishedFlowsMoveFromOpenToTheRingWithTheirBytes() throws {
        let recorder = FlowRecorder(capacity: 3, recording: true)
        try Self.churn(recorder, count: 5)
        let list = recorder.list(FlowFilter())
        #expect(recorder.openCount == 0)
        #expect(list.flows.map(\.id) == [3, 4, 5])
        #expect(list.evicted == 2 && list.capacity == 3)
        #expect(list.flows.allSatisfy { $0.bytesIn == 10 && $0.bytesOut == 20 && $0.closeReason == .done })
        #expect(list.flows.allSatisfy { $0.end != nil && $0.verdict == .allowed && $0.policy == "ns/p" })
    }

    @Test func recordingOffKeepsNothing() throws {
        let recorder = FlowRecorder(capacity: 3, recording: false)
        let channel = EmbeddedChannel()
        #expect(recorder.open(channel, direction: .outbound) == nil)
        #expect(recorder.list(FlowFilter()).flows.isEmpty && !recorder.list(FlowFilter()).recording)
    }

    @Test func aSlowFollowerLosesEventsCountedAndIsToldSo() throws {
        let recorder = FlowRecorder(capacity: 100, recording: true)
        // A reader whose backlog holds 2 events until it "catches up".
        let accepted = NIOLockedValueBox<[[UInt8]]>([])
        let room = NIOLockedValueBox(2)
        let subscription = FlowRecorder.Subscription(filter: FlowFilter()) { line in
            room.withLockedValue { room in
                guard room > 0 else { return false }
                room -= 1
                accepted.withLockedValue { $0.append(line) }
                return true
            }
        }
        recorder.subscribe(subscription)
        #expect(recorder.followerCount == 1)
        try Self.churn(recorder, count: 3)  // 3 starts + 3 ends: 2 delivered, 4 dropped
        #expect(recorder.losses.overruns == 4)
        room.withLockedValue { $0 = 10 }
        try Self.churn(recorder, count: 1)
        let events = try accepted.withLockedValue { lines in
            try lines.map { try MeshJSON.decoder().decode(FlowEvent.self, from: Data($0)) }
        }
        #expect(events.map(\.name) == ["flow-start", "flow-end", "overrun", "flow-start", "flow-end"])
        #expect(events[2] == .overrun(dropped: 4))
        #expect(recorder.list(FlowFilter()).overruns == 4)
        recorder.unsubscribe(subscription)
        #expect(recorder.followerCount == 0)
    }

    @Test func followersGetOnlyWhatTheirFilterMatches() throws {
        let recorder = FlowRecorder(capacity: 10, recording: true)
        let names = NIOLockedValueBox<[String]>([])
        var filter = FlowFilter()
        filter.verdict = .denied
        let subscription = FlowRecorder.Subscription(filter: filter) { line in
            let event = try? MeshJSON.decoder().decode(FlowEvent.self, from: Data(line))
            names.withLockedValue { $0.append(event?.name ?? "?") }
            return true
        }
        recorder.subscribe(subscription)
        try Self.churn(recorder, count: 2)  // allowed: not shown
        let channel = EmbeddedChannel()
        let flow = try #require(recorder.open(channel, direction: .inbound))
        flow.decided(.denied, reason: "port_not_allowed")
        _ = try? channel.finish()
        #expect(names.withLockedValue { $0 } == ["flow-end"], "a denied flow never starts; it ends denied")
    }

    @Test func aLongKeepAliveFlowKeepsItsNewestRequestsAndCountsThemAll() throws {
        let recorder = FlowRecorder(capacity: 10, recording: true)
        let channel = EmbeddedChannel()
        let flow = try #require(recorder.open(channel, direction: .inbound))
        // 40 pipelined requests, then their 40 responses: the first 8 were pushed out of
        // the flow's list before they were answered.
        for number in 0..<40 {
            flow.httpRequest(
                HTTPExchange(method: "GET", authority: nil, path: "/\(number)", verdict: .allowed, policy: "p/q"),
                now: .now()
            )
        }
        for number in 0..<40 { flow.httpResponse(status: 200 + number, now: .now()) }
        let record = flow.snapshot
        #expect(record.requests == 40 && record.http.count == Flow.keptRequests)
        #expect(record.http.first?.path == "/8" && record.http.last?.path == "/39")
        #expect(record.http.allSatisfy { $0.status == 200 + Int($0.path.dropFirst())! && $0.latency != nil })
        _ = try? channel.finish()
    }

    @Test func aPipelineThatNeverEmptiesAnswersEachRequestInOrder() throws {
        let recorder = FlowRecorder(capacity: 10, recording: true)
        let channel = EmbeddedChannel()
        let flow = try #require(recorder.open(channel, direction: .inbound))
        // Two requests in flight at all times for 300 requests, every fifth one denied
        // (answered 403 at once, never waiting for the app).
        func request(_ number: Int) {
            let denied = number % 5 == 4
            flow.httpRequest(
                HTTPExchange(
                    method: "GET",
                    authority: nil,
                    path: "/\(number)",
                    status: denied ? 403 : nil,
                    latency: denied ? 0 : nil,
                    verdict: denied ? .denied : .allowed,
                    policy: "p/q"
                ),
                now: .now()
            )
        }
        request(0)
        var forwarded = [0]
        for number in 1..<300 {
            request(number)
            if number % 5 != 4 { forwarded.append(number) }
            if forwarded.count > 2 { flow.httpResponse(status: 200 + forwarded.removeFirst() % 100, now: .now()) }
        }
        for number in forwarded { flow.httpResponse(status: 200 + number % 100, now: .now()) }
        flow.httpResponse(status: 599, now: .now())  // no request waits: ignored
        let record = flow.snapshot
        #expect(record.requests == 300 && record.http.map(\.path) == (268..<300).map { "/\($0)" })
        #expect(
            record.http.allSatisfy { exchange in
                let number = Int(exchange.path.dropFirst())!
                return exchange.status == (number % 5 == 4 ? 403 : 200 + number % 100)
            }
        )
        _ = try? channel.finish()
    }

    @Test func aFlowCutAtTheDrainDeadlineEndsAsTimeout() throws {
        let recorder = FlowRecorder(capacity: 10, recording: true)
        let channel = EmbeddedChannel()
        _ = try #require(recorder.open(channel, direction: .inbound))
        recorder.markDraining()
        _ = try? channel.finish()
        #expect(recorder.list(FlowFilter()).flows.first?.closeReason == .timeout)
    }
}
