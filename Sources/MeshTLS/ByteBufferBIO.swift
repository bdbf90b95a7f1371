import COpenSSL
import NIOCore

/// An OpenSSL BIO whose two ends are SwiftNIO `ByteBuffer`s.
///
/// OpenSSL reads ciphertext straight out of the buffer the socket filled and writes
/// ciphertext straight into a buffer that goes to the socket. Compared with a pair of
/// memory BIOs this saves a copy each way and holds no buffer between reads: an idle
/// connection keeps nothing here.
final class ByteBufferBIO: SwiftBIO {
    /// Ciphertext received and not yet consumed by OpenSSL.
    private(set) var input: ByteBuffer?
    /// Ciphertext produced by OpenSSL and not yet taken for the network.
    private(set) var output: ByteBuffer?
    private let allocator: ByteBufferAllocator

    init(allocator: ByteBufferAllocator) {
        self.allocator = allocator
        super.init()
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

    override func bioRead(into destination: UnsafeMutablePointer<CChar>, count: Int) -> Int32 {
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

    override func bioWrite(from source: UnsafePointer<CChar>, count: Int) -> Int32 {
        if output == nil {
            output = allocator.buffer(capacity: max(count, 1024))
        }
        output!.writeBytes(UnsafeRawBufferPointer(start: source, count: count))
        return Int32(count)
    }
}
