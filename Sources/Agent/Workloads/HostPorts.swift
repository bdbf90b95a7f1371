import Foundation
import MeshIdentity

/// Which host port publishes which pod's mTLS listener: one port per pod, from the
/// configured range, kept in a file so that an agent restart (or a pod replaced with
/// a new spec) keeps every pod on its port, and freed when the pod goes.
///
/// Pure apart from `load` and `save`; the reconciler's thread is its only user.
struct HostPortTable: Equatable {
    let range: ClosedRange<UInt16>
    /// podman pod name → host port.
    private(set) var assigned: [String: UInt16] = [:]

    /// A port outside `range` (the range was changed) stays with its pod: the pod
    /// runs with it, and its record names it. New pods get ports from the range.
    init(range: ClosedRange<UInt16>, assigned: [String: UInt16] = [:]) {
        self.range = range
        self.assigned = assigned
    }

    /// `pod`'s port: the one it has, else the lowest free one that `usable` accepts
    /// (something else on the node may hold a port of the range). Nil: the range is
    /// full.
    mutating func port(for pod: String, usable: (UInt16) -> Bool) -> UInt16? {
        if let port = assigned[pod] { return port }
        let taken = Set(assigned.values)
        for port in range where !taken.contains(port) && usable(port) {
            assigned[pod] = port
            return port
        }
        return nil
    }

    /// A running pod's port as podman has it (the table was lost or moved aside).
    mutating func adopt(_ pod: String, port: UInt16) {
        assigned[pod] = port
    }

    /// Frees the ports of every pod not in `pods`.
    mutating func keep(only pods: Set<String>) -> [String] {
        let gone = assigned.keys.filter { !pods.contains($0) }.sorted()
        for pod in gone { assigned.removeValue(forKey: pod) }
        return gone
    }
}

extension HostPortTable {
    /// The table in `path` (JSON `{pod: port}`); empty when there is no file.
    static func load(path: String, range: ClosedRange<UInt16>) throws -> HostPortTable {
        guard let data = FileManager.default.contents(atPath: path) else { return HostPortTable(range: range) }
        do {
            return HostPortTable(range: range, assigned: try JSONDecoder().decode([String: UInt16].self, from: data))
        } catch {
            throw HostPortTableUnreadable(path: path, reason: "\(error)")
        }
    }

    /// Written atomically (a temporary file renamed over it).
    func save(path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        try PEMFile.write(path, String(decoding: try encoder.encode(assigned), as: UTF8.self) + "\n", mode: 0o600)
    }

    /// Whether a TCP listener could bind `host:port` now (nothing else holds it).
    static func bindable(host: String, port: UInt16) -> Bool {
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &result) == 0, let info = result else {
            return false
        }
        defer { freeaddrinfo(result) }
        let socket = Glibc.socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socket >= 0 else { return false }
        defer { close(socket) }
        var one: Int32 = 1
        setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        return bind(socket, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0
    }
}

struct HostPortTableUnreadable: Error, CustomStringConvertible {
    let path: String
    let reason: String
    var description: String { "\(path): the host port table is unreadable (\(reason)); move it aside to start afresh" }
}
