import Foundation
import MeshProcess
import MeshTestSupport
import Testing

@testable import Proxy

/// The admin socket path: a stale socket is replaced, a live one and a regular file are not.
@Suite struct AdminSocketTests {
    /// A listening unix socket at `path`; returns its descriptor.
    static func listen(at path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: Array(path.utf8) + [0])
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, Glibc.listen(fd, 1) == 0 else { throw SocketError("cannot listen on \(path)") }
        return fd
    }

    @Test func aStaleSocketIsReplacedButALiveOneAndARegularFileAreNot() throws {
        let directory = TemporaryDirectory()
        let path = directory.path + "/run/admin.sock"
        try AdminSocket.prepare(path)
        #expect(FileManager.default.fileExists(atPath: directory.path + "/run"), "the directory is created")

        let live = try Self.listen(at: path)
        let inUse = #expect(throws: AdminSocket.Unusable.self) { try AdminSocket.prepare(path) }
        #expect(inUse?.description.contains("another process serves") == true)
        close(live)  // the file stays behind, as when a sidecar dies
        #expect(FileManager.default.fileExists(atPath: path))
        try AdminSocket.prepare(path)
        #expect(!FileManager.default.fileExists(atPath: path), "the stale socket is removed")

        #expect(FileManager.default.createFile(atPath: path, contents: Data("keep me".utf8)))
        let file = #expect(throws: AdminSocket.Unusable.self) { try AdminSocket.prepare(path) }
        #expect(file?.description.contains("not a socket") == true)
        #expect(FileManager.default.fileExists(atPath: path), "a regular file is never removed")
    }
}
