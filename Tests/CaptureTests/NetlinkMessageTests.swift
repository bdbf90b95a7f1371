import CNetfilter
import Foundation  // next to CNetfilter: the shim's header order keeps the two importable together
import MeshTestSupport
import Testing

@testable import Capture

@Suite struct NetlinkMessageTests {
    /// An nlmsghdr in host byte order followed by `payload`, padded to 4 bytes.
    private func message(type: UInt16, sequence: UInt32, payload: [UInt8] = []) -> [UInt8] {
        let length = UInt32(16 + payload.count)
        var bytes: [UInt8] = []
        withUnsafeBytes(of: length) { bytes += $0 }
        withUnsafeBytes(of: type) { bytes += $0 }
        withUnsafeBytes(of: UInt16(0)) { bytes += $0 }
        withUnsafeBytes(of: sequence) { bytes += $0 }
        withUnsafeBytes(of: UInt32(0)) { bytes += $0 }
        bytes += payload
        while bytes.count % 4 != 0 { bytes.append(0) }
        return bytes
    }

    private func errorMessage(code: Int32, answering sequence: UInt32) -> [UInt8] {
        var payload: [UInt8] = []
        withUnsafeBytes(of: code) { payload += $0 }
        payload += message(type: 0x0A06, sequence: sequence)
        return message(type: NetlinkMessage.error, sequence: sequence, payload: payload)
    }

    @Test func acknowledgementsAndErrorsNameTheirRequest() throws {
        let bytes =
            errorMessage(code: 0, answering: 7) + errorMessage(code: -95, answering: 8)
            + message(type: NetlinkMessage.done, sequence: 9)
        try bytes.withUnsafeBytes { raw in
            let messages = try #require(NetlinkMessage.split(raw))
            #expect(messages.count == 3)
            #expect(messages[0].acknowledgement(in: raw)! == (0, 7))
            #expect(messages[1].acknowledgement(in: raw)! == (95, 8))
            #expect(messages[2].type == NetlinkMessage.done)
            #expect(messages[2].acknowledgement(in: raw) == nil)
        }
    }

    @Test func truncatedAndRandomInputIsRefusedNotTrusted() {
        let valid = errorMessage(code: 0, answering: 1) + message(type: 16, sequence: 2, payload: [1, 2, 3])
        for cut in 1..<valid.count {
            let prefix = Array(valid.prefix(cut))
            let messages = prefix.withUnsafeBytes { NetlinkMessage.split($0) }
            // A cut inside a message is malformed; a cut on a boundary is a shorter valid list.
            if let messages {
                #expect(messages.allSatisfy { $0.offset + $0.length <= cut })
            }
        }
        var random = SplitMix64(seed: 0xBEE5)
        for _ in 0..<2000 {
            let count = Int(random.next() % 96)
            let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            bytes.withUnsafeBytes { raw in
                guard let messages = NetlinkMessage.split(raw) else { return }
                for message in messages {
                    #expect(message.offset + message.length <= raw.count)
                    _ = message.acknowledgement(in: raw)
                }
            }
        }
    }

    @Test func kernelHeaderConstantsMatchTheParser() {
        #expect(NetlinkMessage.error == UInt16(NLMSG_ERROR))
        #expect(NetlinkMessage.done == UInt16(NLMSG_DONE))
        #expect(NetlinkMessage.headerSize == MemoryLayout<nlmsghdr>.size)
        #expect(Data(RuleUserData.encode(comment: "x")) == Data([0, 2, 0x78, 0]))
    }

    @Test func ruleCommentsRoundTripInNftsUserData() {
        let encoded = RuleUserData.encode(comment: "outbound TCP to the proxy")
        #expect(encoded[0] == 0 && Int(encoded[1]) == "outbound TCP to the proxy".utf8.count + 1)
        #expect(RuleUserData.comment(in: encoded) == "outbound TCP to the proxy")
        #expect(RuleUserData.comment(in: [1, 2, 9, 9] + encoded) == "outbound TCP to the proxy")
        #expect(RuleUserData.comment(in: Array(encoded.dropLast(3))) == nil)
        #expect(RuleUserData.comment(in: []) == nil)
    }
}
