import COpenSSL
import NIOCore

/// An OpenSSL BIO whose two ends are SwiftNIO `ByteBuffer`s.
///
/// OpenSSL reads ciphertext straight out of the buffer the socket filled and writes
/// ciphertext straight into a buffer that goes to the socket. Compared with a pair of
/// memory BIOs this saves a copy each way and holds no buffer between reads: an idle
/// connection keeps nothing here.
final class ByteBufferBIO {
    /// Ciphertext received and not yet consumed by OpenSSL.
    private(set) var input: ByteBuffer?
    /// Ciphertext produced by OpenSSL and not yet taken for the network.
    private(set) var output: ByteBuffer?
    private let allocator: ByteBufferAllocator
    let bio: OpaquePointer

    init(allocator: ByteBufferAllocator) {
        self.allocator = allocator
        self.bio = BIO_new(ByteBufferBIO.method.pointer)!
        BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Appends ciphertext from the network.
    func receive(_ buffer: ByteBuffer) {
        if input == nil || input!.readableBytes == 0 {
            input = buffer
        } else {
            var buffer = buffer
            input!.writeBuffer(&buffer)
        }
    }

    var pendingOutput: Int { output?.readableBytes ?? 0 }

    /// Takes the ciphertext produced so far.
    func takeOutput() -> ByteBuffer? {
        defer { output = nil }
        return output
    }

    fileprivate func read(into destination: UnsafeMutablePointer<CChar>, count: Int) -> Int32 {
        let available = input?.readableBytes ?? 0
        guard available > 0 else {
            input = nil
            beemesh_BIO_set_retry_read(bio)
            return -1
        }
        let n = min(count, available)
        // In place: a copy of the buffer would cost a retain and a release per record.
        input!.withUnsafeReadableBytes { bytes in
            UnsafeMutableRawPointer(destination).copyMemory(from: bytes.baseAddress!, byteCount: n)
        }
        if n == available {
            input = nil
        } else {
            input!.moveReaderIndex(forwardBy: n)
        }
        return Int32(n)
    }

    /// Makes room for the ciphertext of `plaintext` bytes in one allocation.
    func reserveOutput(forPlaintext plaintext: Int) {
        // Each TLS 1.3 record of up to 16 KiB adds a 5-byte header, a type byte and a
        // 16-byte tag.
        let needed = plaintext + (plaintext / 16_384 + 1) * 22
        if output == nil {
            output = allocator.buffer(capacity: needed)
        } else {
            output!.reserveCapacity(minimumWritableBytes: needed)
        }
    }

    fileprivate func write(from source: UnsafePointer<CChar>, count: Int) -> Int32 {
        if output == nil {
            output = allocator.buffer(capacity: max(count, 1024))
        }
        output!.writeBytes(UnsafeRawBufferPointer(start: source, count: count))
        return Int32(count)
    }

    /// The BIO method table, registered with OpenSSL once per process.
    private struct Method: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    private static let method: Method = {
        let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "beemesh-bytebuffer")!
        BIO_meth_set_write(method) { bio, data, length in
            guard let bio, let data, length >= 0 else { return -1 }
            beemesh_BIO_clear_retry_flags(bio)
            // The BIO lives as long as its owner: no retain needed for the call.
            return Unmanaged<ByteBufferBIO>.fromOpaque(BIO_get_data(bio))._withUnsafeGuaranteedRef {
                $0.write(from: data, count: Int(length))
            }
        }
        BIO_meth_set_read(method) { bio, data, length in
            guard let bio, let data, length >= 0 else { return -1 }
            beemesh_BIO_clear_retry_flags(bio)
            return Unmanaged<ByteBufferBIO>.fromOpaque(BIO_get_data(bio))._withUnsafeGuaranteedRef {
                $0.read(into: data, count: Int(length))
            }
        }
        BIO_meth_set_ctrl(method) { _, command, _, _ in
            // OpenSSL flushes after each handshake flight; everything else is unsupported.
            command == BIO_CTRL_FLUSH ? 1 : 0
        }
        BIO_meth_set_create(method) { bio in
            BIO_set_init(bio, 1)
            return 1
        }
        BIO_meth_set_destroy(method) { _ in 1 }
        return Method(pointer: method)
    }()
}
