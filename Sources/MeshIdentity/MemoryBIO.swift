import COpenSSL

/// A read/write memory BIO, freed on deinit.
package final class MemoryBIO {
    package let pointer: OpaquePointer

    package init() {
        self.pointer = BIO_new(BIO_s_mem())!
    }

    package convenience init(_ string: String) {
        self.init()
        _ = string.utf8CString.withUnsafeBufferPointer { buffer in
            BIO_write(pointer, buffer.baseAddress, Int32(buffer.count - 1))
        }
    }

    package convenience init(bytes: [UInt8]) {
        self.init()
        _ = bytes.withUnsafeBufferPointer { buffer in
            BIO_write(pointer, buffer.baseAddress, Int32(buffer.count))
        }
    }

    /// Everything written so far, as bytes.
    package var bytes: [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = BIO_read(pointer, &chunk, Int32(chunk.count))
            if n <= 0 { break }
            result.append(contentsOf: chunk[0..<Int(n)])
        }
        return result
    }

    /// Everything written so far, as a string.
    package var string: String { String(decoding: bytes, as: UTF8.self) }

    deinit { BIO_free(pointer) }
}
