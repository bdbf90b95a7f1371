import Foundation
import Testing

@testable import MeshNet

#if canImport(Glibc)
    import Glibc
#endif

@Suite("System files")
struct SystemFileTests {
    @Test(
        "the parent of a path",
        arguments: [
            ("/a/b", "/a"), ("/a", "/"), ("/", "/"), ("b", "."), ("a/b/", "a"), ("/a//b", "/a"), ("a/b/c", "a/b"),
        ]
    )
    func parent(path: String, parent: String) {
        #expect(SystemFile.parent(of: path) == parent)
    }

    @Test("directories are created with their parents; an existing file in the way is an error")
    func createDirectories() throws {
        let root = try temporaryDirectory()
        defer { remove(root) }
        try SystemFile.createDirectories(root + "/x/y/z")
        try SystemFile.createDirectories(root + "/x/y/z")  // already there: fine
        var status = stat()
        #expect(stat(root + "/x/y/z", &status) == 0 && status.st_mode & S_IFMT == S_IFDIR)
        try write(root + "/file", "text")
        #expect(throws: SystemFile.Failure(root + "/file", "exists and is not a directory")) {
            try SystemFile.createDirectories(root + "/file")
        }
        #expect(throws: SystemFile.Failure.self) { try SystemFile.createDirectories(root + "/file/below") }
    }

    @Test("a read is the file's text; missing, oversized and non-UTF-8 files are errors naming the path")
    func read() throws {
        let root = try temporaryDirectory()
        defer { remove(root) }
        let text = String(repeating: "policy: ✓\n", count: 5000)
        try write(root + "/ok", text)
        #expect(try SystemFile.read(root + "/ok", limit: 1 << 20) == text)
        let missing = #expect(throws: SystemFile.Failure.self) { try SystemFile.read(root + "/none", limit: 10) }
        #expect(missing?.description == "\(root)/none: cannot read: No such file or directory")
        #expect(throws: SystemFile.Failure(root + "/ok", "larger than 100 bytes")) {
            try SystemFile.read(root + "/ok", limit: 100)
        }
        try write(root + "/binary", String(decoding: [0x61], as: UTF8.self), extra: [0xFF, 0xFE])
        #expect(throws: SystemFile.Failure(root + "/binary", "not UTF-8 text")) {
            try SystemFile.read(root + "/binary", limit: 100)
        }
    }

    @Test("writeAll puts every byte on the descriptor, and returns the errno of a failed write")
    func writeAll() throws {
        let root = try temporaryDirectory()
        defer { remove(root) }
        let fd = open(root + "/out", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        try #require(fd >= 0)
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        #expect(SystemFile.writeAll(bytes, to: fd) == nil)
        close(fd)
        #expect(try Data(contentsOf: URL(fileURLWithPath: root + "/out")) == Data(bytes))
        // A descriptor open for reading only: a closed one's number can be taken at once
        // by another test's socket, which the byte would then go to.
        let readOnly = open(root + "/out", O_RDONLY)
        try #require(readOnly >= 0)
        defer { close(readOnly) }
        #expect(SystemFile.writeAll([1], to: readOnly) == EBADF)
    }

    private func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "beemesh-systemfile-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    private func write(_ path: String, _ text: String, extra: [UInt8] = []) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        try #require(fd >= 0)
        defer { close(fd) }
        let bytes = Array(text.utf8) + extra
        #expect(bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count)
    }

    private func remove(_ path: String) {
        try? FileManager.default.removeItem(atPath: path)
    }
}
