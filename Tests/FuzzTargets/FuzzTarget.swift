import Foundation
import Kademlia
import MeshAPI
import MeshConfiguration
import MeshIdentity
import NIOCore
import Policy
import Raft
import RaftHost

@testable import Agent
@testable import Proxy
@testable import RaftPersistence

/// Every parser that reads bytes from outside the process, as a libFuzzer target
/// (`tools/fuzz TARGET`) and as a replay of committed inputs (the test suite runs
/// every file of `Tests/Fuzz/corpus/TARGET` through `run`, so each crash found becomes
/// a regression test once its input is committed there).
///
/// A target may throw or refuse whatever it is given; it must not crash, hang or
/// leak, and where it has a second opinion (the path normalizer and the RFC's own
/// algorithm; a decoded value and its re-encoding) the two must agree, or it traps.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// `MeshPreface` frames and requests, fed in pieces.
    case preface
    /// `DNSQuery`: the mesh resolver's input.
    case dns
    /// `WireDecoder` frames, then `SignedServiceRecord` and `ServiceRecordValidator`.
    case kademlia
    /// `HTTPMessageParser` requests and responses (chunked included), and
    /// `RequestTarget` against an independent normalization.
    case http
    /// YAML: policies, manifests, the proxy's and the agent's configurations.
    case yaml
    /// The agent API's request bodies and queries: `PublishRequest` JSON, a signed
    /// record in it, `FlowFilter` queries, manifests.
    case agentAPI = "agent-api"
    /// `RaftMessage` from a peer (it must survive its own re-encoding), the same bytes
    /// as a workload command and snapshot (`WorkloadState`), and as a Raft write-ahead
    /// log: `RecordFrame.scan` and `RaftRecord`.
    case raft

    public func run(_ bytes: [UInt8]) {
        switch self {
        case .preface: Self.preface(bytes)
        case .dns: _ = try? DNSQuery(parsing: bytes)
        case .kademlia: Self.kademlia(bytes)
        case .http: Self.http(bytes)
        case .yaml: Self.yaml(bytes)
        case .agentAPI: Self.agentAPI(bytes)
        case .raft: Self.raft(bytes)
        }
    }

    // MARK: targets

    private static func raft(_ bytes: [UInt8]) {
        if let message = try? RaftMessage(decoding: bytes[...]) {
            let again = try? RaftMessage(decoding: message.encoded()[...])
            precondition(again == message, "a Raft message changed through its own encoding: \(message)")
        }
        if let command = try? WorkloadState.Command(decoding: bytes) {
            precondition(try! WorkloadState.Command(decoding: command.encoded()) == command, "\(command) changed")
        }
        // The first byte is a control frame's kind, the rest its body.
        if let kind = bytes.first, let control = RaftControl(kind: kind, body: bytes.dropFirst()) {
            precondition(RaftControl(kind: kind, body: control.encoded()[...]) == control, "\(control) changed")
        }
        if let state = try? WorkloadState(snapshot: bytes) {
            precondition(try! WorkloadState(snapshot: state.snapshot()) == state, "a workload snapshot changed")
        }
        // The salt is the first 8 bytes (zeros when the input is shorter).
        let salt = Array((bytes + [UInt8](repeating: 0, count: 8)).prefix(8))
        let file = RaftGroupStore.logMagic + salt + bytes.dropFirst(min(8, bytes.count))
        let scan = RecordFrame.scan(file, from: RaftGroupStore.headerSize, salt: salt)
        for payload in scan.payloads {
            if let record = RaftRecord.decode(file[payload]) {
                precondition(RaftRecord.decode(record.encoded()[...]) == record, "a log record changed: \(record)")
            }
        }
    }

    private static func preface(_ bytes: [UInt8]) {
        // The first byte picks where the input is cut, as the network would.
        let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % max(1, bytes.count)
        var buffer = ByteBuffer()
        for piece in [bytes[..<cut], bytes[cut...]] {
            buffer.writeBytes(piece)
            while let frame = try? MeshPreface.decodeFrame(&buffer) {
                guard let request = try? PrefaceRequest(body: frame) else { return }
                // A request that decodes encodes to a frame that decodes to it again.
                var encoded = ByteBuffer()
                request.encode(into: &encoded)
                guard let again = try? MeshPreface.decodeFrame(&encoded),
                    let decoded = try? PrefaceRequest(body: again),
                    decoded == request
                else { fatalError("preface round trip differs: \(request)") }
            }
        }
        _ = try? MeshPreface.checkComplete(ByteBuffer(bytes: bytes))
    }

    private static let validator: ServiceRecordValidator = {
        let root = try! CertificateAuthority.createRoot(trustDomain: try! TrustDomain("fuzz.test"))
        return ServiceRecordValidator(bundle: root.bundle, now: { 1 })
    }()

    private static func kademlia(_ bytes: [UInt8]) {
        var decoder = WireDecoder()
        let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % max(1, bytes.count)
        for piece in [bytes[..<cut], bytes[cut...]] {
            guard let envelopes = try? decoder.feed(piece) else { break }
            for envelope in envelopes {
                // What decodes re-encodes to a frame that decodes to the same envelope.
                var again = WireDecoder()
                let encoded = WireCodec.encode(envelope)
                guard let round = try? again.feed(encoded), round.count == 1, WireCodec.encode(round[0]) == encoded
                else {
                    fatalError("kademlia round trip differs for \(envelope)")
                }
            }
        }
        if let record = try? SignedServiceRecord(decoding: bytes) {
            _ = try? validator.check(record.dhtRecord)
        }
    }

    private static func http(_ bytes: [UInt8]) {
        let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % max(1, bytes.count)
        var requests = HTTPMessageParser.requests()
        var responses = HTTPMessageParser { _ in .untilClose }
        for piece in [bytes[..<cut], bytes[cut...]] {
            let buffer = ByteBuffer(bytes: piece)
            if case .success(let pieces) = requests.feed(buffer) {
                for case .head(let head, _) in pieces {
                    target(head.second, method: head.first)
                }
            }
            _ = responses.feed(buffer)
        }
        target(String(decoding: bytes, as: UTF8.self), method: "GET")
    }

    /// The normalizer against `ReferenceNormalization`: both refuse, or both give
    /// the same path; and normalizing again changes nothing.
    private static func target(_ raw: String, method: String) {
        let ours = try? RequestTarget(raw, method: method)
        let reference = ReferenceNormalization.path(raw)
        if let ours, ours.path != "*" {
            guard let reference, reference == ours.path else {
                fatalError("\(raw.debugDescription): ours \(ours.path), reference \(reference ?? "refused")")
            }
            guard (try? RequestTarget(ours.target, method: method)) == ours else {
                fatalError("\(raw.debugDescription): normalizing twice differs")
            }
        } else if ours == nil, let reference, raw.utf8.first == UInt8(ascii: "/") {
            fatalError("\(raw.debugDescription): refused, but the reference gives \(reference)")
        }
    }

    private static func yaml(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        _ = try? PolicyDocuments.parse(text, file: "fuzz.yaml")
        _ = try? KubernetesObject.parse(yaml: text, file: "fuzz.yaml")
        _ = try? ProxyConfiguration.parse(yaml: text, file: "fuzz.yaml")
        _ = try? AgentConfiguration.parse(yaml: text, file: "fuzz.yaml")
    }

    private static func agentAPI(_ bytes: [UInt8]) {
        if let request = try? MeshJSON.decoder().decode(PublishRequest.self, from: Data(bytes)),
            let value = Data(base64Encoded: request.record),
            let record = try? SignedServiceRecord(decoding: Array(value))
        {
            _ = try? validator.check(record.dhtRecord)
        }
        let text = String(decoding: bytes, as: UTF8.self)
        _ = try? FlowFilter(query: QueryString.decode(Substring(text)))
        _ = try? KubernetesObject.parse(yaml: text, file: "body")
        _ = KubernetesObject.Kind(name: text)
    }
}

/// An independent path normalization for the differential check, written from the
/// RFC's text rather than from `RequestTarget`: escapes of unreserved characters
/// decoded one at a time, runs of `/` squeezed, then section 5.2.4's input-buffer
/// loop. It refuses (nil) what `RequestTarget` documents as refused.
enum ReferenceNormalization {
    static func path(_ raw: String) -> String? {
        let bytes = Array(raw.utf8)
        guard bytes.first == UInt8(ascii: "/") else { return nil }
        let path = bytes.prefix { $0 != UInt8(ascii: "?") }
        if bytes.count > path.count {
            let query = bytes[(path.count + 1)...]
            guard query.allSatisfy({ allowed($0) || ";?%".utf8.contains($0) }) else {
                return nil
            }
        }
        var decoded = ""
        var index = path.startIndex
        while index < path.endIndex {
            let byte = path[index]
            if byte == UInt8(ascii: "%") {
                guard index + 2 < path.endIndex,
                    let value = UInt8(String(decoding: path[(index + 1)...(index + 2)], as: UTF8.self), radix: 16),
                    path[index + 1] != UInt8(ascii: "+"), path[index + 1] != UInt8(ascii: "-")
                else { return nil }
                if value == 0x2F || value == 0x5C || value < 0x20 || value == 0x7F { return nil }
                let character = Character(Unicode.Scalar(value))
                if value < 0x80, character.isLetter || character.isNumber || "-._~".contains(character) {
                    decoded.append(character)
                } else {
                    decoded += "%" + String(value, radix: 16, uppercase: true).leftPadded(to: 2)
                }
                index += 3
                continue
            }
            guard allowed(byte) else { return nil }
            decoded.append(Character(Unicode.Scalar(byte)))
            index += 1
        }
        while decoded.contains("//") { decoded = decoded.replacingOccurrences(of: "//", with: "/") }
        var input = Substring(decoded)
        var output = ""
        while !input.isEmpty {
            if input.hasPrefix("../") {
                input = input.dropFirst(3)
            } else if input.hasPrefix("./") {
                input = input.dropFirst(2)
            } else if input.hasPrefix("/./") {
                input = input.dropFirst(2)
            } else if input == "/." {
                input = "/"
            } else if input.hasPrefix("/../") {
                input = input.dropFirst(3)
                output = String(output[..<(output.lastIndex(of: "/") ?? output.startIndex)])
            } else if input == "/.." {
                input = "/"
                output = String(output[..<(output.lastIndex(of: "/") ?? output.startIndex)])
            } else if input == "." || input == ".." {
                input = ""
            } else {
                let start = input.hasPrefix("/") ? input.index(after: input.startIndex) : input.startIndex
                let end = input[start...].firstIndex(of: "/") ?? input.endIndex
                output += input[..<end]
                input = input[end...]
            }
        }
        return output.isEmpty ? "/" : output
    }

    /// RFC 3986 `pchar` without `%` and `;` (path parameters are refused), plus `/`.
    private static func allowed(_ byte: UInt8) -> Bool {
        guard byte < 0x80 else { return false }
        let character = Character(Unicode.Scalar(byte))
        return character.isLetter || character.isNumber || "-._~!$&'()*+,=:@/".contains(character)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
