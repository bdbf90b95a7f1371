/// One line of `GET /flows?follow=1` (NDJSON): a flow opened, an HTTP request on it was
/// answered, a flow ended, or events were dropped because this reader fell behind.
///
/// ```
/// {"event":"flow-start","flow":{…}}
/// {"event":"http-request","flow":{…},"request":{…}}   flow: as of the request, without `http`
/// {"event":"flow-end","flow":{…}}
/// {"event":"overrun","dropped":12}                    then the stream goes on
/// ```
public enum FlowEvent: Codable, Sendable, Equatable {
    case flowStart(FlowRecord)
    case httpRequest(FlowRecord, HTTPExchange)
    case flowEnd(FlowRecord)
    case overrun(dropped: UInt64)

    public var name: String {
        switch self {
        case .flowStart: "flow-start"
        case .httpRequest: "http-request"
        case .flowEnd: "flow-end"
        case .overrun: "overrun"
        }
    }

    /// The flow the event is about (nil for an overrun).
    public var flow: FlowRecord? {
        switch self {
        case .flowStart(let flow), .httpRequest(let flow, _), .flowEnd(let flow): flow
        case .overrun: nil
        }
    }

    private enum CodingKeys: String, CodingKey {
        case event, flow, request, dropped
    }

    public init(from decoder: any Decoder) throws {
        let values = try decoder.container(keyedBy: CodingKeys.self)
        let name = try values.decode(String.self, forKey: .event)
        switch name {
        case "flow-start": self = .flowStart(try values.decode(FlowRecord.self, forKey: .flow))
        case "flow-end": self = .flowEnd(try values.decode(FlowRecord.self, forKey: .flow))
        case "http-request":
            self = .httpRequest(
                try values.decode(FlowRecord.self, forKey: .flow),
                try values.decode(HTTPExchange.self, forKey: .request)
            )
        case "overrun": self = .overrun(dropped: try values.decode(UInt64.self, forKey: .dropped))
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .event,
                in: values,
                debugDescription: "unknown flow event '\(name)'"
            )
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var values = encoder.container(keyedBy: CodingKeys.self)
        try values.encode(name, forKey: .event)
        switch self {
        case .flowStart(let flow), .flowEnd(let flow):
            try values.encode(flow, forKey: .flow)
        case .httpRequest(let flow, let request):
            try values.encode(flow, forKey: .flow)
            try values.encode(request, forKey: .request)
        case .overrun(let dropped):
            try values.encode(dropped, forKey: .dropped)
        }
    }
}

/// The answer to `GET /flows`: the flows that matched (oldest first), and what the
/// ring buffer could not keep, so that a short list is never mistaken for all there was.
public struct FlowList: Codable, Sendable, Equatable {
    public var flows: [FlowRecord]
    /// Finished flows the ring buffer holds at most.
    public var capacity: Int
    /// Finished flows pushed out of the ring buffer by newer ones since start.
    public var evicted: UInt64
    /// Events dropped from `follow` streams whose readers fell behind, since start.
    public var overruns: UInt64
    /// Whether this sidecar records flows at all (`flows.record`).
    public var recording: Bool

    public init(flows: [FlowRecord], capacity: Int, evicted: UInt64, overruns: UInt64, recording: Bool) {
        self.flows = flows
        self.capacity = capacity
        self.evicted = evicted
        self.overruns = overruns
        self.recording = recording
    }
}
