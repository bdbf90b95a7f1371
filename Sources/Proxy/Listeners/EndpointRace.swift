import MeshConfiguration
import NIOConcurrencyHelpers

/// How one outbound connection picks its endpoint: Happy Eyeballs between the
/// endpoints (the idea of RFC 8305, across endpoints instead of address families).
/// The pure half: events and the time in, directives out; `OutboundRouteHandler`
/// dials, closes and keeps the timer.
///
/// An attempt is a TCP connect, the mTLS handshake and the preface's answer. The
/// first candidate is dialled at once; while no attempt has answered, the next is
/// dialled `stagger` later, or at once when one fails. The first attempt to answer
/// (accepted, denied, or a broken preface: an answer either way) carries the flow and
/// every other attempt is cancelled; those dialled before it and still silent count
/// as failed. So a node that vanished without a reset costs a connection `stagger`
/// (250 ms by default), not `timeouts.connect`, and then `EndpointHealth` puts it last.
struct EndpointRace: Sendable {
    enum Directive: Equatable, Sendable {
        /// Start an attempt to candidate `index`.
        case dial(Int)
        /// Call `timer(now:)` at this time (nanoseconds, the caller's clock).
        case wake(at: UInt64)
        /// Close the attempt to candidate `index`: another answered, or the race is over.
        case cancel(Int)
        /// The attempt to candidate `index` answered: its connection carries the flow.
        case use(Int)
        /// Candidate `index` was dialled before the winner and is still silent: it
        /// counts as failed (a node that vanished answers nothing, not even a reset).
        case eject(Int)
        /// Every candidate failed.
        case exhausted
    }

    private enum Attempt: Equatable {
        case pending
        case failed
    }

    let candidates: Int
    let stagger: UInt64
    private var attempts: [Attempt] = []
    private var nextDialAt: UInt64?
    private var over = false

    init(candidates: Int, stagger: UInt64) {
        self.candidates = candidates
        self.stagger = stagger
    }

    /// The race begins: the first candidate is dialled.
    mutating func start(now: UInt64) -> [Directive] {
        precondition(attempts.isEmpty, "EndpointRace started twice")
        return dialNext(now: now)
    }

    /// The timer asked for fired: the next candidate, if the stagger is up and none answered.
    mutating func timer(now: UInt64) -> [Directive] {
        guard !over, let due = nextDialAt else { return [] }
        guard now >= due else { return [.wake(at: due)] }
        return dialNext(now: now)
    }

    /// Candidate `index` could not be used (unreachable, refused, handshake failed):
    /// the next is dialled at once; when none is left and none is pending, the race
    /// is lost.
    mutating func failed(_ index: Int, now: UInt64) -> [Directive] {
        guard !over, attempts.indices.contains(index), attempts[index] == .pending else { return [] }
        attempts[index] = .failed
        if attempts.count < candidates { return dialNext(now: now) }
        if attempts.contains(.pending) { return [] }
        over = true
        nextDialAt = nil
        return [.exhausted]
    }

    /// Candidate `index` answered the preface: it carries the flow, the others are cancelled.
    mutating func answered(_ index: Int) -> [Directive] {
        guard !over, attempts.indices.contains(index), attempts[index] == .pending else { return [.cancel(index)] }
        over = true
        nextDialAt = nil
        let others = attempts.indices.filter { $0 != index && attempts[$0] == .pending }
        return [.use(index)] + others.map(Directive.cancel) + others.filter { $0 < index }.map(Directive.eject)
    }

    /// Attempts dialled so far (tests and the flow record).
    var dialled: Int { attempts.count }

    private mutating func dialNext(now: UInt64) -> [Directive] {
        let index = attempts.count
        guard index < candidates else {
            nextDialAt = nil
            return []
        }
        attempts.append(.pending)
        guard index + 1 < candidates else {
            nextDialAt = nil
            return [.dial(index)]
        }
        nextDialAt = now + stagger
        return [.dial(index), .wake(at: now + stagger)]
    }
}

/// The proxy's `EndpointHealth`, shared by every connection (`ProxyEnvironment`).
final class EndpointHealthTable: Sendable {
    private let health = NIOLockedValueBox(EndpointHealth())

    func order(_ endpoints: [ProxyConfiguration.Endpoint], now: UInt64) -> [ProxyConfiguration.Endpoint] {
        health.withLockedValue { $0.order(endpoints, address: { $0.address.description }, now: now) }
    }

    /// Returns whether `address` was ejected anew (not already), for `firstEjection`
    /// nanoseconds after a first failure (`timeouts.ejection`).
    func failed(_ address: String, now: UInt64, firstEjection: UInt64 = EndpointHealth.firstEjection) -> Bool {
        health.withLockedValue { health in
            defer { if health.count > 1024 { health.sweep(now: now) } }
            return health.failed(address, now: now, firstEjection: firstEjection) != nil
        }
    }

    func answered(_ address: String) {
        health.withLockedValue { $0.answered(address) }
    }
}

/// Passive outlier ejection: an endpoint that failed an attempt is tried after the
/// others for a while (`timeouts.ejection`, 1 s by default, after its first failure,
/// doubling with each failure in a row, at most 60 s), so later connections do not pay for it again; one answer
/// restores it. Ejected endpoints are still tried, last, when no other is left: a
/// route whose endpoints all failed keeps trying them, as Envoy's panic mode does.
/// Pure: the time is given. Keyed by the endpoint's address.
struct EndpointHealth: Sendable {
    static let firstEjection: UInt64 = 1_000_000_000
    static let longestEjection: UInt64 = 60_000_000_000

    private struct Record {
        var failures: Int
        var ejectedUntil: UInt64
    }

    private var records: [String: Record] = [:]

    /// `address` failed an attempt at `now`; returns how long it is ejected for, or
    /// nil when it was ejected already: failures while it is (connections that were
    /// under way together) say nothing new about the endpoint.
    @discardableResult
    mutating func failed(_ address: String, now: UInt64, firstEjection: UInt64 = Self.firstEjection) -> UInt64? {
        var record = records[address] ?? Record(failures: 0, ejectedUntil: 0)
        guard record.ejectedUntil <= now else { return nil }
        record.failures += 1
        let doubling = UInt64(1) << UInt64(min(record.failures - 1, 16))
        let period = min(
            firstEjection.multipliedReportingOverflow(by: doubling).partialValue,
            Self.longestEjection
        )
        record.ejectedUntil = now + period
        records[address] = record
        return period
    }

    /// `address` answered: it is healthy again.
    mutating func answered(_ address: String) {
        records[address] = nil
    }

    /// Endpoints with a failure on record.
    var count: Int { records.count }

    func isEjected(_ address: String, now: UInt64) -> Bool {
        (records[address]?.ejectedUntil ?? 0) > now
    }

    /// `candidates` (already in rotation order) with the ejected ones moved to the end,
    /// the soonest back first.
    func order<Candidate>(_ candidates: [Candidate], address: (Candidate) -> String, now: UInt64) -> [Candidate] {
        let healthy = candidates.filter { !isEjected(address($0), now: now) }
        guard healthy.count < candidates.count else { return candidates }
        let ejected = candidates.filter { isEjected(address($0), now: now) }
            .sorted { records[address($0)]!.ejectedUntil < records[address($1)]!.ejectedUntil }
        return healthy + ejected
    }

    /// Forgets endpoints whose ejection ended long ago, so the table holds only
    /// endpoints that failed recently.
    mutating func sweep(now: UInt64) {
        records = records.filter { $0.value.ejectedUntil + Self.longestEjection > now }
    }
}
