import Raft

/// How a record sits in a file, so that a torn or damaged one is always noticed:
///
/// ```
/// | length u32 | crc32c(salt, payload) u32 | crc32c(salt, the 8 bytes before) u32 | payload (length bytes) |
/// ```
///
/// The header has a checksum of its own, so a damaged length is never followed: a
/// reader that finds a bad record can look for the next good one byte by byte, and
/// tell a torn tail (nothing good after it) from damage in the middle. Both checksums
/// start from the file's salt (8 random bytes in its header), so a frame that a
/// workload wrote into a value (it controls those bytes) is no frame of this file.
enum RecordFrame {
    static let headerSize = 12
    /// Larger payloads are refused as damage (a snapshot larger than this is too).
    static let maximumPayload = 1 << 30

    static func append(_ payload: [UInt8], salt: [UInt8], to file: inout [UInt8]) {
        precondition(payload.count <= maximumPayload, "a Raft record of \(payload.count) bytes")
        var header = ByteWriter()
        header.u32(UInt32(payload.count))
        header.u32(payload.withUnsafeBytes { CRC32C.checksum(salt, $0) })
        header.u32(header.bytes.withUnsafeBytes { CRC32C.checksum(salt, $0) })
        file += header.bytes
        file += payload
    }

    /// The payload of the good record at `offset`, nil when there is none there.
    static func payload(in file: [UInt8], at offset: Int, salt: [UInt8]) -> Range<Int>? {
        guard offset >= 0, file.count - offset >= headerSize else { return nil }
        return file.withUnsafeBytes { bytes -> Range<Int>? in
            let length = Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            let payloadSum = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
            let headerSum = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self))
            guard CRC32C.checksum(salt, UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + 8])) == headerSum,
                length <= maximumPayload, file.count - offset - headerSize >= length
            else { return nil }
            let payload = offset + headerSize..<offset + headerSize + length
            guard CRC32C.checksum(salt, UnsafeRawBufferPointer(rebasing: bytes[payload])) == payloadSum else {
                return nil
            }
            return payload
        }
    }

    /// The good records from `start` on, up to the first bad one.
    struct Scan: Equatable {
        var payloads: [Range<Int>] = []
        /// Where the good records end: the file's length when all were good.
        var end: Int
        /// The next good record after the first bad one, if any: damage in the middle.
        var resumesAt: Int?
    }

    static func scan(_ file: [UInt8], from start: Int, salt: [UInt8]) -> Scan {
        var scan = Scan(end: start)
        while scan.end < file.count, let payload = payload(in: file, at: scan.end, salt: salt) {
            scan.payloads.append(payload)
            scan.end = payload.upperBound
        }
        if scan.end < file.count {
            scan.resumesAt = (scan.end + 1..<file.count).first { payload(in: file, at: $0, salt: salt) != nil }
        }
        return scan
    }
}
