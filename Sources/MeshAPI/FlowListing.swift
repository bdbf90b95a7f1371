#if canImport(FoundationEssentials)
    import FoundationEssentials
#else
    import Foundation
#endif

/// `beectl flows` as a table: one row per flow (or per follow event), columns sized
/// to their content, colour on the verdict only when writing to a terminal.
///
/// ```
/// TIME          DIR  SOURCE          DESTINATION     PORT  PROTO  VERDICT  POLICY           BYTES      DURATION  HTTP
/// 22:45:01.123  in   shop/frontend   orders.shop     8080  http   allowed  shop/orders-api  1.2K/56K   1.50s     GET /api/orders 200 (+2)
/// ```
///
/// `wide` adds the flow id, full SPIFFE IDs and addresses, TLS, the deny or failure
/// reason and the close reason.
public struct FlowListing: Sendable {
    public enum Format: String, Sendable, CaseIterable {
        case table
        case wide
    }

    public let format: Format
    public let colour: Bool
    /// A POD column after TIME: the node agent's merged view of its sidecars.
    public let pods: Bool

    public init(format: Format, colour: Bool, pods: Bool = false) {
        self.format = format
        self.colour = colour
        self.pods = pods
    }

    public var header: [String] {
        let base =
            ["TIME"] + (pods ? ["POD"] : [])
            + ["DIR", "SOURCE", "DESTINATION", "PORT", "PROTO", "VERDICT", "POLICY", "BYTES", "DURATION", "HTTP"]
        guard format == .wide else { return base }
        return ["ID"] + base + ["TLS", "REASON", "CLOSE"]
    }

    /// The cells of one flow; `event` names a follow event (`start`, `request`, `end`).
    public func row(_ flow: FlowRecord, now: Date, request: HTTPExchange? = nil) -> [String] {
        let wide = format == .wide
        let source =
            wide
            ? [flow.source.identity, flow.source.address].compactMap { $0 }.joined(separator: " ")
            : Self.short(flow.source.identity, address: flow.source.address)
        let destinationName = flow.destination.service ?? flow.destination.address ?? "-"
        let destination =
            wide
            ? [destinationName, flow.destination.identity].compactMap { $0 }.joined(separator: " ")
            : destinationName
        let http: String
        if let request {
            http = Self.summary(request)
        } else if let last = flow.http.last {
            http = Self.summary(last) + (flow.requests > 1 ? " (+\(flow.requests - 1))" : "")
        } else {
            http = ""
        }
        var cells = [
            Self.clock(flow.start),
            flow.direction == .inbound ? "in" : "out",
            source,
            destination,
            String(flow.destination.port),
            flow.protocol,
            paint(flow.verdict),
            request?.policy ?? flow.policy.map { policy in flow.rule.map { wide ? "\(policy)#\($0)" : policy } ?? policy
            } ?? "-",
            "\(Self.bytes(flow.bytesIn))/\(Self.bytes(flow.bytesOut))",
            flow.end == nil ? "open" : Self.duration(flow.duration(now: now)),
            http,
        ]
        if pods { cells.insert(flow.pod ?? "-", at: 1) }
        if wide {
            cells.insert(String(flow.id), at: 0)
            cells += [
                flow.tls.map { "\($0.version) \($0.cipher)" } ?? "-",
                flow.reason ?? "-",
                flow.closeReason?.rawValue ?? "-",
            ]
        }
        return cells
    }

    /// Rows aligned under the header, two spaces between columns.
    public func render(_ rows: [[String]]) -> String {
        TextTable.render([header] + rows)
    }

    /// A row for a follow stream, whose widths cannot be known in advance: fixed widths
    /// wide enough for the usual values (longer ones push the line).
    public func renderStreaming(_ row: [String]) -> String {
        let widths = format == .wide ? [6, 12, 3, 40, 40, 5, 5, 8, 24, 11, 8] : [12, 3, 22, 22, 5, 5, 8, 20, 11, 8]
        return row.enumerated().map { index, cell in
            guard index < widths.count else { return cell }
            return cell + String(repeating: " ", count: max(0, widths[index] - Self.visibleWidth(cell)))
        }.joined(separator: "  ").trimmingTrailingSpaces() + "\n"
    }

    func paint(_ verdict: FlowRecord.Verdict) -> String {
        guard colour else { return verdict.rawValue }
        let code =
            switch verdict {
            case .allowed: "32"
            case .denied, .error: "31"
            case .audit: "33"
            case .revoked: "35"
            }
        return "\u{1B}[\(code)m\(verdict.rawValue)\u{1B}[0m"
    }

    /// `ns/sa` for a workload SPIFFE ID in the table; the address for the unauthenticated.
    static func short(_ identity: String, address: String?) -> String {
        let segments = identity.split(separator: "/", omittingEmptySubsequences: false)
        if identity.hasPrefix("spiffe://"), segments.count == 7, segments[3] == "ns", segments[5] == "sa" {
            return "\(segments[4])/\(segments[6])"
        }
        if identity == "unauthenticated", let address { return address }
        return identity
    }

    static func summary(_ request: HTTPExchange) -> String {
        "\(request.method) \(request.path) \(request.status.map(String.init) ?? "-")"
    }

    /// `HH:MM:SS.mmm` (UTC).
    static func clock(_ date: Date) -> String {
        let text = Timestamp.format(date)
        let time = text.dropFirst(11)
        return String(time.prefix(12))
    }

    /// `950`, `1.2K`, `56K`, `3.4M`, `1.1G`.
    static func bytes(_ count: UInt64) -> String {
        let units: [(UInt64, String)] = [(1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")]
        for (size, suffix) in units where count >= size {
            let value = Double(count) / Double(size)
            return value < 10 ? fixed(value, digits: 1) + suffix : "\(Int(value))\(suffix)"
        }
        return String(count)
    }

    /// `850µs`, `12ms`, `1.50s`, `2m05s`, `1h02m`.
    static func duration(_ seconds: Double) -> String {
        if seconds < 0.001 { return "\(Int((seconds * 1_000_000).rounded()))µs" }
        if seconds < 1 { return "\(Int((seconds * 1000).rounded()))ms" }
        if seconds < 60 { return fixed(seconds, digits: 2) + "s" }
        let total = Int(seconds)
        if total < 3600 { return "\(total / 60)m\(twoDigits(total % 60))s" }
        return "\(total / 3600)h\(twoDigits(total / 60 % 60))m"
    }

    /// `value` (not negative) rounded to `digits` decimals: `fixed(1.25, digits: 1)` is `1.3`.
    static func fixed(_ value: Double, digits: Int) -> String {
        var scale = 1
        for _ in 0..<digits { scale *= 10 }
        let scaled = Int((value * Double(scale)).rounded())
        let fraction = String(scaled % scale)
        return "\(scaled / scale)." + String(repeating: "0", count: digits - fraction.count) + fraction
    }

    private static func twoDigits(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }

    /// Characters a terminal shows (colour escapes take none).
    static func visibleWidth(_ text: String) -> Int {
        var width = 0
        var escaping = false
        for character in text {
            if escaping {
                if character == "m" { escaping = false }
            } else if character == "\u{1B}" {
                escaping = true
            } else {
                width += 1
            }
        }
        return width
    }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}

/// Rows aligned in columns, two spaces apart, the last column unpadded; widths count
/// what a terminal shows (colour escapes take none). `beectl`'s tables.
public enum TextTable {
    public static func render(_ rows: [[String]]) -> String {
        var widths: [Int] = []
        for row in rows {
            for (index, cell) in row.enumerated() {
                if index == widths.count { widths.append(0) }
                widths[index] = max(widths[index], FlowListing.visibleWidth(cell))
            }
        }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1
                    ? cell : cell + String(repeating: " ", count: widths[index] - FlowListing.visibleWidth(cell))
            }.joined(separator: "  ").trimmingTrailingSpaces()
        }.joined(separator: "\n") + "\n"
    }
}
