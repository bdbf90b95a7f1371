#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// Which flows `GET /flows` and `beectl flows` show. Every field that is set must
/// match; an empty filter matches everything.
///
/// Patterns (`from`, `to`, `service`, `policy`) are whole-string globs in which `*`
/// stands for any run of characters, so `spiffe://example.org/ns/shop/*` names a
/// namespace. A pattern without `*` also matches a SPIFFE ID's service account
/// (`frontend` matches `spiffe://…/ns/shop/sa/frontend`) and an address's host
/// (`10.0.0.7` matches `10.0.0.7:41234`).
///
/// | query          | flag             | matches                                                |
/// |----------------|------------------|--------------------------------------------------------|
/// | `from`         | `--from`         | source identity or address                             |
/// | `to`           | `--to`           | destination identity, address or service               |
/// | `service`      | `--service`      | destination service                                    |
/// | `port`         | `--port`         | destination port                                       |
/// | `verdict`      | `--verdict`      | the flow's verdict                                     |
/// | `policy`       | `--policy`       | the deciding policy of the flow or of one of its requests |
/// | `protocol`     | `--protocol`     | `tcp` or `http`                                        |
/// | `http_status`  | `--http-status`  | a request answered with it: `404`, or a class `4xx`    |
/// | `since`        | `--since`        | open, or ended, within the last so many seconds        |
/// | `limit`        | `--last`         | only the newest N that match                           |
/// | `pod`          | `--pod`          | the pod whose sidecar recorded it (node agent only)    |
/// | `namespace`    | `--namespace`    | that pod's namespace (node agent only)                 |
public struct FlowFilter: Sendable, Equatable {
    public var from: String?
    public var to: String?
    public var service: String?
    public var port: UInt16?
    public var verdict: FlowRecord.Verdict?
    public var policy: String?
    public var `protocol`: String?
    public var httpStatus: String?
    /// Seconds.
    public var since: Double?
    public var limit: Int?
    /// A glob on the recording pod's name (flows merged by the node agent).
    public var pod: String?
    public var namespace: String?

    public init() {}

    /// A query parameter that cannot be used.
    public struct Error: Swift.Error, Sendable, Equatable, CustomStringConvertible {
        public var parameter: String
        public var reason: String
        public var description: String { "\(parameter): \(reason)" }
    }

    public func matches(_ flow: FlowRecord, now: Date) -> Bool {
        if let from, !Self.matches(from, identity: flow.source.identity, address: flow.source.address) {
            return false
        }
        if let to,
            !(Self.matches(to, identity: flow.destination.identity, address: flow.destination.address)
                || flow.destination.service.map { Self.glob(to, $0) } == true)
        {
            return false
        }
        if let service, flow.destination.service.map({ Self.glob(service, $0) }) != true { return false }
        if let port, flow.destination.port != port { return false }
        if let verdict, flow.verdict != verdict { return false }
        if let policy {
            let policies = [flow.policy] + flow.http.map(\.policy)
            guard policies.contains(where: { $0.map { Self.glob(policy, $0) } == true }) else { return false }
        }
        if let `protocol`, flow.protocol != `protocol` { return false }
        if let httpStatus {
            guard flow.http.contains(where: { $0.status.map { Self.status($0, matches: httpStatus) } == true }) else {
                return false
            }
        }
        if let since, let end = flow.end, end < now.addingTimeInterval(-since) { return false }
        if pod != nil || namespace != nil {
            let parts = flow.pod?.split(separator: "/", maxSplits: 1).map(String.init) ?? []
            guard parts.count == 2 else { return false }
            if let namespace, parts[0] != namespace { return false }
            if let pod, !Self.glob(pod, parts[1]) { return false }
        }
        return true
    }

    /// The newest `limit` flows of `flows` (in start order) that match.
    public func apply(_ flows: [FlowRecord], now: Date) -> [FlowRecord] {
        let matching = flows.filter { matches($0, now: now) }
        guard let limit, matching.count > limit else { return matching }
        return Array(matching.suffix(limit))
    }

    /// `404` matches 404 only; `4xx` any status from 400 to 499.
    static func status(_ status: Int, matches pattern: String) -> Bool {
        let lower = pattern.lowercased()
        if lower.count == 3, lower.hasSuffix("xx"), let digit = lower.first?.wholeNumberValue {
            return status / 100 == digit
        }
        return Int(pattern) == status
    }

    static func matches(_ pattern: String, identity: String?, address: String?) -> Bool {
        if let identity {
            if glob(pattern, identity) { return true }
            if !pattern.contains("*"), identity.hasSuffix("/sa/" + pattern) { return true }
        }
        if let address {
            if glob(pattern, address) { return true }
            if !pattern.contains("*"), host(of: address) == pattern { return true }
        }
        return false
    }

    /// `host` of `host:port` or `[v6]:port`.
    static func host(of address: String) -> Substring {
        if address.hasPrefix("["), let close = address.firstIndex(of: "]") {
            return address[address.index(after: address.startIndex)..<close]
        }
        guard let colon = address.lastIndex(of: ":") else { return address[...] }
        return address[..<colon]
    }

    /// Whole-string match where `*` stands for any run of characters.
    static func glob(_ pattern: String, _ text: String) -> Bool {
        let parts = pattern.split(separator: "*", omittingEmptySubsequences: false)
        guard parts.count > 1 else { return pattern == text }
        var rest = text[...]
        guard rest.hasPrefix(parts[0]) else { return false }
        rest = rest.dropFirst(parts[0].count)
        for part in parts.dropFirst().dropLast() where !part.isEmpty {
            guard let range = rest.firstRange(of: part) else { return false }
            rest = rest[range.upperBound...]
        }
        let last = parts[parts.count - 1]
        return rest.count >= last.count && rest.hasSuffix(last)
    }
}

extension FlowFilter {
    /// The query parameters that carry this filter (`follow` not included).
    public var queryItems: [(name: String, value: String)] {
        var items: [(String, String)] = []
        if let from { items.append(("from", from)) }
        if let to { items.append(("to", to)) }
        if let service { items.append(("service", service)) }
        if let port { items.append(("port", String(port))) }
        if let verdict { items.append(("verdict", verdict.rawValue)) }
        if let policy { items.append(("policy", policy)) }
        if let `protocol` { items.append(("protocol", `protocol`)) }
        if let httpStatus { items.append(("http_status", httpStatus)) }
        if let since { items.append(("since", String(since))) }
        if let limit { items.append(("limit", String(limit))) }
        if let pod { items.append(("pod", pod)) }
        if let namespace { items.append(("namespace", namespace)) }
        return items
    }

    /// Reads the filter from query parameters; other names (such as `follow`) are left
    /// to the caller. Unknown values are errors, never silently ignored: a filter that
    /// does not filter would show more than the operator asked for.
    public init(query: [(name: String, value: String)]) throws(FlowFilter.Error) {
        self.init()
        for (name, value) in query {
            switch name {
            case "from": from = value
            case "to": to = value
            case "service": service = value
            case "port":
                guard let number = UInt16(value), number > 0 else {
                    throw Error(parameter: name, reason: "'\(value)' is not a port (1-65535)")
                }
                port = number
            case "verdict":
                guard let parsed = FlowRecord.Verdict(rawValue: value) else {
                    let names = FlowRecord.Verdict.allCases.map(\.rawValue).joined(separator: ", ")
                    throw Error(parameter: name, reason: "'\(value)' is not one of \(names)")
                }
                verdict = parsed
            case "policy": policy = value
            case "protocol":
                guard value == "tcp" || value == "http" else {
                    throw Error(parameter: name, reason: "'\(value)' is not tcp or http")
                }
                `protocol` = value
            case "http_status":
                let lower = value.lowercased()
                let isClass =
                    lower.count == 3 && lower.hasSuffix("xx") && (1...5).contains(lower.first?.wholeNumberValue ?? 0)
                guard isClass || Int(value).map({ (100...599).contains($0) }) == true else {
                    throw Error(
                        parameter: name,
                        reason: "'\(value)' is not a status such as 404 or a class such as 4xx"
                    )
                }
                httpStatus = value
            case "since":
                guard let seconds = Double(value), seconds >= 0, seconds.isFinite else {
                    throw Error(parameter: name, reason: "'\(value)' is not a number of seconds")
                }
                since = seconds
            case "limit":
                guard let count = Int(value), count > 0 else {
                    throw Error(parameter: name, reason: "'\(value)' is not a positive count")
                }
                limit = count
            case "pod": pod = value
            case "namespace": namespace = value
            default:
                continue
            }
        }
    }
}
