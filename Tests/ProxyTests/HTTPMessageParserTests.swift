import MeshTestSupport
import NIOCore
import Testing

@testable import Proxy

/// Request framing: pipelined, chunked, split anywhere; refusals for what cannot be framed.
@Suite struct HTTPMessageParserTests {
    static let pipelined =
        "GET /api/a?x=1 HTTP/1.1\r\nHost: orders\r\n\r\n"
        + "POST /orders HTTP/1.1\r\nHost: orders\r\nContent-Length: 5\r\n\r\nhello"
        + "PUT /chunks HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nwiki\r\n0\r\nTrailer: x\r\n\r\n"
        + "DELETE /x HTTP/1.0\r\n\r\n"

    /// (method, target, body bytes) of every complete message, fed in pieces of `step`.
    static func messages(_ text: String, step: Int) -> Result<[(String, String, String)], HTTPFramingError> {
        var parser = HTTPMessageParser.requests()
        let bytes = Array(text.utf8)
        var result: [(String, String, String)] = []
        var current: (String, String, String)?
        var index = 0
        while index < bytes.count {
            let piece = ByteBuffer(bytes: bytes[index..<min(bytes.count, index + step)])
            index += step
            switch parser.feed(piece) {
            case .failure(let error): return .failure(error)
            case .success(let pieces):
                for piece in pieces {
                    switch piece {
                    case .head(let head, _): current = (head.first, head.second, "")
                    case .body(let body): current?.2 += String(buffer: body)
                    case .end:
                        if let done = current { result.append(done) }
                        current = nil
                    }
                }
            }
        }
        return .success(result)
    }

    @Test func pipelinedMessagesAreFramedWhateverTheSplit() throws {
        let expected = [
            ("GET", "/api/a?x=1", ""),
            ("POST", "/orders", "hello"),
            ("PUT", "/chunks", "4;ext=1\r\nwiki\r\n0\r\nTrailer: x\r\n\r\n"),
            ("DELETE", "/x", ""),
        ]
        for step in [1, 2, 3, 7, 64, 4096] {
            let got = try Self.messages(Self.pipelined, step: step).get()
            #expect(got.map(\.0) == expected.map(\.0), "step \(step)")
            #expect(got.map(\.1) == expected.map(\.1), "step \(step)")
            #expect(got.map(\.2) == expected.map(\.2), "step \(step)")
        }
    }

    @Test func headBytesAreExactlyWhatCameIn() throws {
        var parser = HTTPMessageParser.requests()
        let text = "GET / HTTP/1.1\r\nX-A:  spaced  \r\n\r\n"
        let pieces = try parser.feed(ByteBuffer(string: text + "GET /2 HTTP/1.1\r\n")).get()
        guard case .head(let head, let bytes) = pieces.first else { Issue.record("no head"); return }
        #expect(String(buffer: bytes) == text)
        #expect(head.header("x-a") == "spaced")
        #expect(!parser.isIdle)
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "ambiguous_length"),
        ("GET / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "ambiguous_length"),
        ("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "bad_content_length"),
        ("GET / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", "bad_content_length"),
        ("GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported_transfer_encoding"),
        ("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed_chunk"),
        ("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n", "malformed_chunk"),
        ("GET / HTTP/2.0\r\n\r\n", "malformed_start_line"),
        ("GET /a b HTTP/1.1\r\n\r\n", "malformed_start_line"),
        ("GET / HTTP/1.1\r\n folded: x\r\n\r\n", "malformed_header"),
        ("GET / HTTP/1.1\r\nno colon\r\n\r\n", "malformed_header"),
        ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", "malformed_header"),
    ])
    func unframeableRequestsAreRefused(text: String, code: String) {
        for step in [1, 5, 1000] {
            guard case .failure(let error) = Self.messages(text, step: step) else {
                Issue.record("accepted at step \(step): \(text.debugDescription)")
                return
            }
            #expect(error.code.rawValue == code, "step \(step): \(error)")
        }
    }

    @Test func oversizedHeadsAreRefused() {
        let head = "GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 20_000) + "\r\n\r\n"
        guard case .failure(let error) = Self.messages(head, step: 512) else {
            Issue.record("accepted")
            return
        }
        #expect(error.code == .headTooLarge)
    }

    /// Random and truncated input: never a crash, never a message from bytes that are
    /// not one, and every complete message is a prefix of what a whole-stream parse gives.
    @Test func randomAndTruncatedInput() {
        var random = SplitMix64(seed: 0x4854_5450)
        let alphabet = Array("GET POST / HTTP/1.1\r\n:Content-Length: 3 Transfer-Encoding: chunked 0a;\r\n".utf8)
        for _ in 0..<3000 {
            let count = Int(random.next() % 200)
            let bytes = (0..<count).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] }
            var parser = HTTPMessageParser.requests()
            _ = parser.feed(ByteBuffer(bytes: bytes))
        }
        let whole = try? Self.messages(Self.pipelined, step: 4096).get()
        for cut in 0..<Self.pipelined.utf8.count {
            let prefix = String(decoding: Array(Self.pipelined.utf8.prefix(cut)), as: UTF8.self)
            guard let got = try? Self.messages(prefix, step: 13).get() else {
                Issue.record("a truncated stream failed at \(cut)")
                return
            }
            #expect(got.count <= whole?.count ?? 0)
            #expect(zip(got, whole ?? []).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 })
        }
    }
}
