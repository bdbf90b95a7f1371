import Testing

@testable import MeshAPI

@Suite("Admin client response reader")
struct HTTPResponseReaderTests {
    /// Feeds `text` in pieces of `step` bytes; returns the body and whether it completed.
    func read(_ text: String, step: Int, close: Bool = false) throws -> (status: Int?, body: String, complete: Bool) {
        var reader = HTTPResponseReader()
        let bytes = Array(text.utf8)
        var body: [UInt8] = []
        var complete = false
        var index = 0
        while index < bytes.count {
            let output = try reader.feed(bytes[index..<min(index + step, bytes.count)])
            body += output.body
            complete = complete || output.complete
            index += step
        }
        if close {
            let output = try reader.finish()
            body += output.body
            complete = complete || output.complete
        }
        return (reader.status, String(decoding: body, as: UTF8.self), complete)
    }

    @Test("content-length, chunked with trailers, and until-close bodies", arguments: [1, 3, 1000])
    func framing(step: Int) throws {
        let length = try read("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", step: step)
        #expect(length.status == 200 && length.body == "hello" && length.complete)
        let chunked = try read(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\na;ext=1\r\n, world!!!\r\n0\r\nx-trailer: 1\r\n\r\n",
            step: step
        )
        #expect(chunked.body == "hello, world!!!" && chunked.complete)
        let untilClose = try read("HTTP/1.1 404 Not Found\r\n\r\nnope", step: step, close: true)
        #expect(untilClose.status == 404 && untilClose.body == "nope" && untilClose.complete)
    }

    @Test("truncated and malformed responses are errors")
    func errors() {
        #expect(throws: AdminClientError.self) {
            try read("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nhello", step: 4, close: true)
        }
        #expect(throws: AdminClientError.self) {
            try read("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", step: 4)
        }
        #expect(throws: AdminClientError.self) { try read("SSH-2.0-OpenSSH\r\n\r\n", step: 4) }
        #expect(throws: AdminClientError.self) { try read("HTTP/1.1 200", step: 4, close: true) }
    }

    @Test("endpoints: socket paths and http URLs")
    func endpoints() throws {
        #expect(try AdminClient.Endpoint("/var/run/beemesh/proxy.sock") == .unix(path: "/var/run/beemesh/proxy.sock"))
        #expect(try AdminClient.Endpoint("http://127.0.0.1:15000") == .tcp(host: "127.0.0.1", port: 15000))
        #expect(try AdminClient.Endpoint("http://[::1]:15000/") == .tcp(host: "::1", port: 15000))
        #expect(throws: AdminClientError.self) { try AdminClient.Endpoint("https://127.0.0.1:15000") }
        #expect(throws: AdminClientError.self) { try AdminClient.Endpoint("http://127.0.0.1:0") }
    }
}
