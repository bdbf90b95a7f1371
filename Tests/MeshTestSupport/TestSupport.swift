import Foundation
import MeshNet

/// Runs blocking work (sockets, child processes) on a thread of its own.
///
/// Swift Testing runs tests on the cooperative pool, which has one thread per core: two
/// on the CI machine. A test that blocks a pool thread starves every other test's
/// continuations, so blocking calls never run there.
public func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try body() })
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
}

/// How much longer a wall-clock bound may be here: 5 under a sanitizer (`tools/sanitize`
/// sets `ASAN_OPTIONS` or `TSAN_OPTIONS`; ThreadSanitizer slows the code 5-15 times),
/// else 1. For bounds that tell a slow machine from a wrong behaviour by a wide margin,
/// not for measurements.
public let sanitizerSlowdown: Double = {
    let environment = ProcessInfo.processInfo.environment
    return environment["TSAN_OPTIONS"] != nil || environment["ASAN_OPTIONS"] != nil ? 5 : 1
}()

/// Looks at `condition` every 10 ms until it holds, or throws after `seconds`. It
/// looks from a thread of its own: a test pool busy with other suites can wake a
/// sleeping task far too late for what the test times.
public func waitUntil(
    _ what: String,
    seconds: Double = 10,
    _ condition: @escaping @Sendable () -> Bool
) async throws {
    let met = try await blocking {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while !condition() {
            guard ContinuousClock.now < deadline else { return false }
            usleep(10_000)
        }
        return true
    }
    guard met else { throw SocketError("timed out after \(seconds) s waiting: \(what)") }
}

/// A temporary directory, removed on deinit.
public final class TemporaryDirectory: Sendable {
    public let path: String

    public init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("beemesh-test-\(UUID())").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs a command with `input` on stdin (then closed) until it exits or `timeout`
/// passes; returns its exit status and combined output. Call it through `blocking`.
public func runProcess(_ arguments: [String], input: [UInt8], timeout: Double = 10) throws -> (
    status: Int32, output: String
) {
    let (status, output) = try ChildProcess.run(arguments, input: input, timeout: timeout)
    return (status, String(decoding: output, as: UTF8.self))
}

/// A small deterministic generator, so that a failing random test reproduces.
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on now.
public func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    return try bindLoopback(fd)
}

/// Binds the IPv4 socket `fd` to a port of 127.0.0.1 the kernel picks (and listens,
/// with `backlog`), and returns the port.
@discardableResult
public func bindLoopback(_ fd: Int32, listening backlog: Int32? = nil) throws -> Int {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && (backlog.map { listen(fd, $0) == 0 } ?? true)
                && getsockname(fd, pointer, &length) == 0
        }
    }
    guard bound else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    return Int(UInt16(bigEndian: address.sin_port))
}
