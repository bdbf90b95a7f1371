import COpenSSL

/// An OpenSSL BIO served by a Swift object: OpenSSL's reads and writes on the BIO call
/// the subclass's `bioRead` and `bioWrite` (`ByteBufferBIO` under a channel,
/// `SocketBIO` under a detached stream). One method table, registered once per
/// process, serves every subclass; the call reaches the subclass through its vtable.
///
/// The BIO lives as long as its owner (the `SSL` that holds it is freed first), so the
/// callbacks take no reference to the object.
class SwiftBIO {
    let bio: OpaquePointer

    init() {
        bio = BIO_new(SwiftBIO.method.pointer)!
        BIO_set_data(bio, Unmanaged.passUnretained(self).toOpaque())
    }

    /// Fills `destination` with up to `count` bytes: the count, 0 at end of input, or
    /// -1 with the BIO's retry flag set when nothing is there yet.
    func bioRead(into destination: UnsafeMutablePointer<CChar>, count: Int) -> Int32 {
        preconditionFailure("\(type(of: self)) does not read")
    }

    /// Takes `count` bytes from `source`: the count taken.
    func bioWrite(from source: UnsafePointer<CChar>, count: Int) -> Int32 {
        preconditionFailure("\(type(of: self)) does not write")
    }

    private struct Method: @unchecked Sendable {
        let pointer: OpaquePointer
    }

    private static let method: Method = {
        let method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "beemesh")!
        BIO_meth_set_write(method) { bio, data, length in
            guard let bio, let data, length >= 0 else { return -1 }
            beemesh_BIO_clear_retry_flags(bio)
            return Unmanaged<SwiftBIO>.fromOpaque(BIO_get_data(bio))._withUnsafeGuaranteedRef {
                $0.bioWrite(from: data, count: Int(length))
            }
        }
        BIO_meth_set_read(method) { bio, data, length in
            guard let bio, let data, length >= 0 else { return -1 }
            beemesh_BIO_clear_retry_flags(bio)
            return Unmanaged<SwiftBIO>.fromOpaque(BIO_get_data(bio))._withUnsafeGuaranteedRef {
                $0.bioRead(into: data, count: Int(length))
            }
        }
        BIO_meth_set_ctrl(method) { _, command, _, _ in
            // OpenSSL flushes after each handshake flight; sending is the owner's job, so
            // a flush succeeds. Everything else is unsupported.
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
