import COpenSSL

/// Reads and clears OpenSSL's thread-local error queue.
///
/// OpenSSL reports failures by pushing onto a per-thread queue; every failed call must
/// drain it, or a stale error surfaces later on an unrelated connection.
package enum OpenSSLErrorQueue {
    /// Drains the queue and returns its entries joined, or `fallback` if it was empty.
    package static func drain(or fallback: String = "unknown OpenSSL error") -> String {
        var messages: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            messages.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return messages.isEmpty ? fallback : messages.joined(separator: "; ")
    }

    /// Discards whatever is queued.
    package static func clear() { ERR_clear_error() }
}

extension IdentityError {
    static func openSSL(_ what: String) -> IdentityError {
        IdentityError(.openSSL, "\(what): \(OpenSSLErrorQueue.drain())")
    }
}
