import MeshTestSupport
import NIOCore
import Proxy
import Testing

@Suite struct MeshPrefaceTests {
    private func frame(_ request: PrefaceRequest) -> ByteBuffer {
        var buffer = ByteBuffer()
        request.encode(into: &buffer)
        return buffer
    }

    @Test func requestRoundTrip() throws {
        let request = try PrefaceRequest(service: "orders.default", port: 8080)
        var buffer = frame(request)
        #expect(Array(buffer.readableBytesView.prefix(5)) == [0x42, 0x4D, 1, 0, 16])
        let body = try #require(try MeshPreface.decodeFrame(&buffer))
        #expect(try PrefaceRequest(body: body) == request)
        #expect(buffer.readableBytes == 0)
    }

    @Test func responseRoundTrip() throws {
        for response in [PrefaceResponse.ok, .denied(.portNotAllowed), .denied(.upstreamUnavailable)] {
            var buffer = ByteBuffer()
            response.encode(into: &buffer)
            let body = try #require(try MeshPreface.decodeFrame(&buffer))
            #expect(try PrefaceResponse(body: body) == response)
        }
    }

    /// Byte by byte, the decoder asks for more until the frame is whole, then leaves
    /// the payload that follows untouched.
    @Test func incrementalWithTrailingPayload() throws {
        var whole = frame(try PrefaceRequest(service: "orders.default", port: 8080))
        whole.writeString("GET / HTTP/1.1\r\n")
        var partial = ByteBuffer()
        var decoded: ByteBuffer?
        while decoded == nil, let byte = whole.readInteger(as: UInt8.self) {
            partial.writeInteger(byte)
            decoded = try MeshPreface.decodeFrame(&partial)
        }
        #expect(try PrefaceRequest(body: try #require(decoded)).port == 8080)
        partial.writeBuffer(&whole)
        #expect(String(buffer: partial) == "GET / HTTP/1.1\r\n")
    }

    @Test func truncated() throws {
        var buffer = frame(try PrefaceRequest(service: "orders.default", port: 8080))
        var cut = buffer.readSlice(length: 9)!
        #expect(try MeshPreface.decodeFrame(&cut) == nil)
        #expect { try MeshPreface.checkComplete(cut) } throws: { ($0 as? PrefaceError)?.code == .truncated }
        #expect { try MeshPreface.checkComplete(ByteBuffer()) } throws: { ($0 as? PrefaceError)?.code == .truncated }
    }

    @Test func oversizedIsRefusedFromTheHeaderAlone() {
        var buffer = ByteBuffer(bytes: [0x42, 0x4D, 1, 0x10, 0x00])  // claims 4096 bytes
        #expect { try MeshPreface.decodeFrame(&buffer) } throws: { ($0 as? PrefaceError)?.code == .oversized }
    }

    @Test func unknownVersion() {
        var buffer = ByteBuffer(bytes: [0x42, 0x4D, 2])
        #expect { try MeshPreface.decodeFrame(&buffer) } throws: { ($0 as? PrefaceError)?.code == .unknownVersion }
    }

    @Test(arguments: [[0x16, 0x03, 0x01], Array("GET / HTTP/1.1".utf8), [0x42, 0x00]])
    func badMagic(_ bytes: [UInt8]) {
        var buffer = ByteBuffer(bytes: bytes)
        #expect { try MeshPreface.decodeFrame(&buffer) } throws: { ($0 as? PrefaceError)?.code == .badMagic }
    }

    @Test(
        arguments: [
            [0x42, 0x4D, 1, 0, 1, 0x1F],  // body too short for a port
            [0x42, 0x4D, 1, 0, 2, 0x1F, 0x90],  // no service
            [0x42, 0x4D, 1, 0, 5, 0x00, 0x00, 0x61, 0x2E, 0x62],  // port 0
            [0x42, 0x4D, 1, 0, 5, 0x1F, 0x90, 0x41, 0x2E, 0x62],  // uppercase service
            [0x42, 0x4D, 1, 0, 5, 0x1F, 0x90, 0xFF, 0xFE, 0x62],  // not UTF-8
        ] as [[UInt8]]
    )
    func malformedRequestBody(_ bytes: [UInt8]) throws {
        var buffer = ByteBuffer(bytes: bytes)
        let body = try #require(try MeshPreface.decodeFrame(&buffer))
        #expect { try PrefaceRequest(body: body) } throws: { ($0 as? PrefaceError)?.code == .malformed }
    }

    @Test func malformedResponses() {
        for bytes: [UInt8] in [[0, 0, 1], [1, 0, 0], [7, 0, 0], [1, 0, 99], [0, 0]] {
            #expect(throws: PrefaceError.self) { try PrefaceResponse(body: ByteBuffer(bytes: bytes)) }
        }
    }

    /// Random input never crashes the decoder: it asks for more, or fails with a reason.
    @Test func randomInput() {
        var generator = SplitMix64(seed: 0xBEE)
        for _ in 0..<20_000 {
            let length = Int(generator.next() % 40)
            var bytes = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            if generator.next() % 2 == 0, bytes.count >= 3 { bytes[0] = 0x42; bytes[1] = 0x4D; bytes[2] = 1 }
            var buffer = ByteBuffer(bytes: bytes)
            if let body = try? MeshPreface.decodeFrame(&buffer) {
                _ = try? PrefaceRequest(body: body)
                _ = try? PrefaceResponse(body: body)
            }
        }
    }
}
