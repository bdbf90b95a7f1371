import ArgumentParser
import Foundation
import MeshAPI
import MeshIdentity

/// `beectl flows`: the flows of a sidecar, through its admin API.
struct FlowsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flows",
        abstract: "Show the live and recent flows of a sidecar: identities, verdicts, policies, bytes, HTTP.",
        discussion: """
            Patterns (--from, --to, --service, --policy) are whole-string globs where * is any run of \
            characters; a pattern without * also matches a SPIFFE ID's service account and an address's \
            host. Evicted flows and dropped follow events are reported, never hidden.
            """
    )

    enum Output: String, ExpressibleByArgument, CaseIterable {
        case table, wide, json
    }

    @Option(
        help: "A sidecar's admin socket or http://host:port (default: every sidecar on the node, through its agent)."
    )
    var proxy: String?

    @Option(
        help:
            "The node agent's API socket or http://host:port, when no --proxy is given (default: $BEEMESH_AGENT, else \(AgentConnection.defaultAgent))."
    )
    var agent = AgentConnection.environmentAgent

    @Option(help: "Pod name (a glob; through the agent only).")
    var pod: String?

    @Option(name: .shortAndLong, help: "The pod's namespace (through the agent only).")
    var namespace: String?

    @Option(help: "Source SPIFFE ID, service account or address.")
    var from: String?

    @Option(help: "Destination SPIFFE ID, service, service account or address.")
    var to: String?

    @Option(help: "Destination service (name.namespace).")
    var service: String?

    @Option(help: "Destination port.")
    var port: UInt16?

    @Option(help: "allowed, denied, audit, revoked or error.")
    var verdict: String?

    @Option(help: "Deciding policy (namespace/name) of the flow or of one of its requests.")
    var policy: String?

    @Option(name: .customLong("protocol"), help: "tcp or http.")
    var transport: String?

    @Option(help: "An HTTP status (404) or class (4xx) of one of the flow's requests.")
    var httpStatus: String?

    @Option(help: "Only flows open or ended within this long (30s, 5m, 1h).")
    var since: String?

    @Option(help: "Only the newest N flows that match.")
    var last: Int?

    @Flag(name: .shortAndLong, help: "Stream flow events as they happen (until interrupted).")
    var follow = false

    @Option(name: .shortAndLong, help: "table, wide or json (json with --follow: one event per line).")
    var output: Output = .table

    func validate() throws {
        if proxy != nil, pod != nil || namespace != nil {
            throw ValidationError("--pod and --namespace filter the agent's merged view: leave out --proxy")
        }
        if proxy == nil, follow { throw ValidationError("--follow streams one sidecar: give its --proxy") }
    }

    func run() throws {
        let filter = try makeFilter()
        let endpoint: AdminClient.Endpoint
        do {
            endpoint = try AdminClient.Endpoint(proxy ?? agent)
        } catch {
            throw ValidationError(error.reason)
        }
        let query = QueryString.encode(filter.queryItems)
        do {
            if follow {
                try stream(endpoint, query: query)
            } else {
                try list(endpoint, query: query)
            }
        } catch {
            FileHandle.standardError.write(Data("beectl: \(error.reason)\n".utf8))
            throw ExitCode(error.status == nil ? 2 : 1)
        }
    }

    private func makeFilter() throws -> FlowFilter {
        var items: [(name: String, value: String)] = []
        if let from { items.append(("from", from)) }
        if let to { items.append(("to", to)) }
        if let service { items.append(("service", service)) }
        if let port { items.append(("port", String(port))) }
        if let verdict { items.append(("verdict", verdict)) }
        if let policy { items.append(("policy", policy)) }
        if let transport { items.append(("protocol", transport)) }
        if let httpStatus { items.append(("http_status", httpStatus)) }
        if let since {
            guard let seconds = DurationString.parse(since) else {
                throw ValidationError("--since: '\(since)' is not a duration such as 30s, 5m or 1h")
            }
            items.append(("since", String(seconds)))
        }
        if let last { items.append(("limit", String(last))) }
        if let pod { items.append(("pod", pod)) }
        if let namespace { items.append(("namespace", namespace)) }
        do {
            return try FlowFilter(query: items)
        } catch {
            let flag = error.parameter == "limit" ? "last" : error.parameter.replacingOccurrences(of: "_", with: "-")
            throw ValidationError("--\(flag): \(error.reason)")
        }
    }

    private var listing: FlowListing {
        FlowListing(
            format: output == .wide ? .wide : .table,
            colour: isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil,
            pods: proxy == nil
        )
    }

    private func list(_ endpoint: AdminClient.Endpoint, query: String) throws(AdminClientError) {
        let list = try AdminClient(endpoint: endpoint).get("/flows?" + query, as: FlowList.self)
        if output == .json {
            let data = (try? MeshJSON.encoder(pretty: true).encode(list)) ?? Data()
            FileHandle.standardOutput.write(data + Data("\n".utf8))
            return
        }
        let now = Date()
        let listing = self.listing
        FileHandle.standardOutput.write(Data(listing.render(list.flows.map { listing.row($0, now: now) }).utf8))
        var notes: [String] = []
        if !list.recording { notes.append("flow recording is off on this sidecar (flows.record)") }
        if list.evicted > 0 {
            notes.append("\(list.evicted) older flows were evicted from the flow table (capacity \(list.capacity))")
        }
        if list.overruns > 0 { notes.append("\(list.overruns) follow events were dropped for slow readers") }
        for note in notes { FileHandle.standardError.write(Data("note: \(note)\n".utf8)) }
    }

    private func stream(_ endpoint: AdminClient.Endpoint, query: String) throws(AdminClientError) {
        var client = AdminClient(endpoint: endpoint)
        client.timeout = nil
        let listing = self.listing
        let json = output == .json
        if !json { FileHandle.standardOutput.write(Data(listing.renderStreaming(listing.header).utf8)) }
        var pending: [UInt8] = []
        var failure: String?
        let status = try client.stream("/flows?follow=1&" + query) { status, bytes in
            pending += bytes
            guard status == 200 else { return true }
            while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(pending[...newline])
                pending.removeSubrange(...newline)
                if json {
                    FileHandle.standardOutput.write(Data(line))
                    continue
                }
                do {
                    let event = try MeshJSON.decoder().decode(FlowEvent.self, from: Data(line))
                    FileHandle.standardOutput.write(Data(render(event, listing: listing).utf8))
                } catch {
                    failure = "unreadable event: \(error)"
                    return false
                }
            }
            return true
        }
        if let failure { throw AdminClientError(failure) }
        guard status == 200 else {
            let message = try? MeshJSON.decoder().decode(AdminError.self, from: Data(pending))
            throw AdminClientError("HTTP \(status): " + (message?.error ?? String(decoding: pending, as: UTF8.self)))
        }
    }

    private func render(_ event: FlowEvent, listing: FlowListing) -> String {
        let now = Date()
        switch event {
        case .flowStart(let flow), .flowEnd(let flow):
            return listing.renderStreaming(listing.row(flow, now: now))
        case .httpRequest(let flow, let request):
            return listing.renderStreaming(listing.row(flow, now: now, request: request))
        case .overrun(let dropped):
            return "-- \(dropped) events dropped: this reader fell behind --\n"
        }
    }
}
