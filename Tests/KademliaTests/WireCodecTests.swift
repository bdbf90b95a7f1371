import Kademlia
import KademliaSimulation
import Testing

@Suite struct WireCodecTests {
    static let sender = Contact(id: NodeID(1, 2, 3, 4), address: "10.0.0.7:15012")

    static let messages: [Message] = [
        .ping, .pong, .findNode(NodeID(9, 8, 7, 6)), .findValue(NodeID(5, 5, 5, 5)),
        .nodes([]), .nodes((0..<20).map { Contact(id: NodeID(UInt64($0), 0, 0, 1), address: "[fd00::\($0)]:15012") }),
        .values([]),
        .values([
            Record(
                key: NodeID(1, 1, 1, 1),
                publisher: NodeID(3, 0, 0, 0),
                value: Array("orders".utf8),
                sequence: 7,
                expires: 99
            ),
            Record(key: NodeID(1, 1, 1, 1), publisher: NodeID(4, 0, 0, 0), value: [1, 2], sequence: 1, expires: 98),
        ]),
        .store(Record(key: NodeID(2, 2, 2, 2), publisher: NodeID(5, 5, 5, 5), value: [], sequence: .max, expires: 0)),
        .stored(true), .stored(false),
    ]

    @Test(arguments: messages)
    func everyMessageRoundTripsWholeAndSplitAtEveryByte(message: Message) throws {
        let envelope = Envelope(from: Self.sender, requestID: 0xDEAD_BEEF_0000_0001, message: message, fromClient: true)
        let bytes = WireCodec.encode(envelope)
        var whole = WireDecoder()
        #expect(try whole.feed(bytes) == [envelope])
        for split in 0...bytes.count {
            var decoder = WireDecoder()
            let first = try decoder.feed(bytes[..<split])
            let second = try decoder.feed(bytes[split...])
            #expect(first + second == [envelope], "split at \(split)")
            #expect(decoder.pending == 0)
        }
    }

    @Test func twoFramesInOneReadAreTwoMessages() throws {
        let a = Envelope(from: Self.sender, requestID: 1, message: .ping)
        let b = Envelope(from: Self.sender, requestID: 2, message: .pong)
        var decoder = WireDecoder()
        #expect(try decoder.feed(WireCodec.encode(a) + WireCodec.encode(b)) == [a, b])
    }

    @Test func malformedFramesAreErrorsWithACode() {
        func frame(_ body: [UInt8]) -> [UInt8] {
            let length = UInt32(body.count)
            return [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)]
                + body
        }
        let good = Array(WireCodec.encode(Envelope(from: Self.sender, requestID: 1, message: .ping)).dropFirst(4))
        let cases: [([UInt8], WireError.Code)] = [
            ([0x00, 0x04, 0x00, 0x01], .oversized),
            (frame([2] + good.dropFirst()), .unknownVersion),
            (frame([1, 99] + good.dropFirst(2)), .unknownType),
            (frame(good + [0]), .malformed),
            (frame(Array(good.prefix(20))), .truncated),
            (frame([1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 4] + good.dropFirst(11)), .malformed),
        ]
        for (bytes, code) in cases {
            var decoder = WireDecoder()
            let error = #expect(throws: WireError.self) { try decoder.feed(bytes) }
            #expect(error?.code == code, "\(bytes.prefix(16))")
            #expect(throws: WireError.self, "a failed stream stays failed") { try decoder.feed([]) }
        }
    }

    @Test func randomAndTruncatedInputNeverCrashes() {
        var random = Mixer(seed: 99)
        var decoded = 0
        var refused = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                // A valid frame with bytes flipped or cut.
                let message = Self.messages[Int(random.next() % UInt64(Self.messages.count))]
                bytes = WireCodec.encode(Envelope(from: Self.sender, requestID: random.next(), message: message))
                let position = Int(random.next() % UInt64(bytes.count))
                if random.next() % 2 == 0 {
                    bytes[position] ^= UInt8(truncatingIfNeeded: random.next() | 1)
                } else {
                    bytes = Array(bytes.prefix(position))
                }
            } else {
                bytes = (0..<Int(random.next() % 200)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            }
            var decoder = WireDecoder()
            do {
                decoded += try decoder.feed(bytes).count
            } catch {
                refused += 1
            }
        }
        #expect(decoded > 0 && refused > 0, "decoded \(decoded), refused \(refused)")
    }
}
