/// Big-endian binary fields, written and read the same way by the wire format and the
/// signed service records.
struct BinaryWriter {
    var bytes: [UInt8] = []

    mutating func integer(_ value: some FixedWidthInteger) {
        for shift in (0..<(value.bitWidth / 8)).reversed() {
            bytes.append(UInt8(truncatingIfNeeded: value >> (8 * shift)))
        }
    }

    mutating func raw(_ value: some Sequence<UInt8>) { bytes += value }

    /// A u32 length, then the bytes.
    mutating func lengthPrefixed(_ value: [UInt8]) {
        integer(UInt32(value.count))
        bytes += value
    }

    mutating func string(_ value: String) { lengthPrefixed(Array(value.utf8)) }
}

/// Reads fields off a byte slice; every read checks what is left and fails with the
/// caller's own error type.
struct BinaryReader<Failure: Error> {
    private(set) var rest: ArraySlice<UInt8>
    private let truncated: (String) -> Failure

    init(_ bytes: ArraySlice<UInt8>, truncated: @escaping (String) -> Failure) {
        self.rest = bytes
        self.truncated = truncated
    }

    var isEmpty: Bool { rest.isEmpty }

    mutating func take(_ count: Int, _ what: String) throws(Failure) -> ArraySlice<UInt8> {
        guard rest.count >= count else { throw truncated("\(what): needs \(count) bytes, \(rest.count) left") }
        defer { rest = rest.dropFirst(count) }
        return rest.prefix(count)
    }

    mutating func integer<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws(Failure) -> T {
        try take(T.bitWidth / 8, what).reduce(0) { $0 << 8 | T($1) }
    }

    /// A u32 length, then that many bytes.
    mutating func lengthPrefixed(_ what: String) throws(Failure) -> [UInt8] {
        let count = Int(try integer(UInt32.self, what + " length"))
        return Array(try take(count, what))
    }
}
