/// An HTTP/1.1 request target in the one form policy decides on and the app receives.
///
/// Normalization follows RFC 3986 section 6.2.2 and Istio's `NORMALIZE_AND_MERGE_SLASHES`,
/// and refuses what servers read differently, so that a path rule cannot be passed by
/// spelling a path another way:
///
/// | input | result |
/// |---|---|
/// | `%41` … an encoded unreserved character (letters, digits, `-._~`) | decoded: `A` |
/// | `%2f`, `%2F`, `%5c`, `%5C` (an encoded `/` or `\`) | refused |
/// | `%00`-`%1F`, `%7F` (an encoded control character) | refused |
/// | any other `%xx` | kept, hex digits upper-cased |
/// | `%` not followed by two hex digits | refused |
/// | `\`, a space, a control or non-ASCII byte, `#`, or any byte RFC 3986 does not allow in a path | refused |
/// | `;` in the path (a path parameter: Tomcat, Jetty and Spring read `/a/..;/b` as `/b`) | refused |
/// | `//` | merged into `/` |
/// | `.` and `..` segments (also `%2e`) | removed (RFC 3986 section 5.2.4); `..` never climbs above `/` |
/// | `*` (OPTIONS only) | kept |
/// | anything that does not start with `/` (absolute or authority form) | refused |
///
/// The query is kept as sent, but may only hold bytes RFC 3986 allows in a query.
struct RequestTarget: Equatable {
    /// The normalized path, never empty, always starting with `/` (or `*`).
    let path: Substring
    /// The query without its `?`; nil: none.
    let query: Substring?
    /// What the app receives: the path, then `?` and the query if there was one.
    let target: String

    struct Refusal: Error, Equatable, CustomStringConvertible {
        enum Code: String, CaseIterable {
            case notOriginForm = "not_origin_form"
            case encodedSeparator = "encoded_separator"
            case badPercentEncoding = "bad_percent_encoding"
            case invalidCharacter = "invalid_character"
        }
        let code: Code
        let reason: String
        var description: String { "\(code.rawValue): \(reason)" }
    }

    /// Normalizes `raw` (the request line's target) for `method`. A target that is
    /// already normal (the common case) is checked in one pass and not copied.
    init(_ raw: String, method: String) throws(Refusal) {
        if raw == "*", method == "OPTIONS" {
            (path, query, target) = (raw[...], nil, raw)
            return
        }
        guard raw.utf8.first == UInt8(ascii: "/") else {
            throw Refusal(code: .notOriginForm, reason: "the target must start with '/'")
        }
        if let split = Self.normalSplit(raw) {
            let question = raw.utf8.index(raw.utf8.startIndex, offsetBy: split)
            path = raw[..<question]
            query = question < raw.endIndex ? raw[raw.index(after: question)...] : nil
            target = raw
            return
        }
        let bytes = Array(raw.utf8)
        let split = bytes.firstIndex(of: UInt8(ascii: "?")) ?? bytes.endIndex
        var decoded: [UInt8] = []
        decoded.reserveCapacity(split)
        var index = 0
        while index < split {
            let byte = bytes[index]
            if byte == UInt8(ascii: "%") {
                guard index + 2 < split, let high = Self.hexValue(bytes[index + 1]),
                    let low = Self.hexValue(bytes[index + 2])
                else {
                    throw Refusal(code: .badPercentEncoding, reason: "'%' must be followed by two hex digits")
                }
                let value = high << 4 | low
                if value == UInt8(ascii: "/") || value == UInt8(ascii: "\\") {
                    throw Refusal(code: .encodedSeparator, reason: "an encoded '/' or '\\' is ambiguous")
                }
                if value < 0x20 || value == 0x7F {
                    throw Refusal(code: .invalidCharacter, reason: "an encoded control character")
                }
                if Self.isUnreserved(value) {
                    decoded.append(value)
                } else {
                    decoded += [UInt8(ascii: "%"), Self.hexDigit(high), Self.hexDigit(low)]
                }
                index += 3
                continue
            }
            guard Self.isPathByte(byte) else {
                throw Refusal(code: .invalidCharacter, reason: "byte 0x\(Self.hex(byte)) is not allowed in a path")
            }
            decoded.append(byte)
            index += 1
        }
        if split < bytes.endIndex {
            let rest = bytes[(split + 1)...]
            guard rest.allSatisfy({ Self.isQueryByte($0) || $0 == UInt8(ascii: "%") }) else {
                throw Refusal(code: .invalidCharacter, reason: "the query holds a byte that is not allowed")
            }
            let queryText = String(decoding: rest, as: UTF8.self)
            let pathText = String(decoding: Self.removeDotSegments(Self.mergeSlashes(decoded)), as: UTF8.self)
            (path, query, target) = (pathText[...], queryText[...], pathText + "?" + queryText)
        } else {
            let pathText = String(decoding: Self.removeDotSegments(Self.mergeSlashes(decoded)), as: UTF8.self)
            (path, query, target) = (pathText[...], nil, pathText)
        }
    }

    /// Where the query starts (or the length) when `raw` is already normal: only path
    /// bytes, no `%`, no `//`, no segment starting with `.`, and a valid query; nil
    /// otherwise (the full normalization decides).
    private static func normalSplit(_ raw: String) -> Int? {
        var previous: UInt8 = 0
        var offset = 0
        var iterator = raw.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "?") {
                while let rest = iterator.next() {
                    guard isQueryByte(rest) || rest == UInt8(ascii: "%") else { return nil }
                }
                return offset
            }
            guard isPathByte(byte),
                previous != UInt8(ascii: "/") || (byte != UInt8(ascii: "/") && byte != UInt8(ascii: "."))
            else { return nil }
            previous = byte
            offset += 1
        }
        return offset
    }

    // MARK: the steps

    private static func mergeSlashes(_ path: [UInt8]) -> [UInt8] {
        var merged: [UInt8] = []
        merged.reserveCapacity(path.count)
        for byte in path where !(byte == UInt8(ascii: "/") && merged.last == UInt8(ascii: "/")) {
            merged.append(byte)
        }
        return merged
    }

    /// RFC 3986 section 5.2.4, over segments: `.` is dropped, `..` drops the segment
    /// before it (none above the root); a path that ended in `.` or `..` keeps its
    /// trailing `/`.
    private static func removeDotSegments(_ path: [UInt8]) -> [UInt8] {
        var output: [ArraySlice<UInt8>] = []
        let segments = path.dropFirst().split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        var trailingSlash = false
        for segment in segments {
            trailingSlash = false
            if segment.elementsEqual([UInt8(ascii: ".")]) {
                trailingSlash = true
            } else if segment.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                _ = output.popLast()
                trailingSlash = true
            } else {
                output.append(segment)
            }
        }
        var result: [UInt8] = [UInt8(ascii: "/")]
        for (index, segment) in output.enumerated() {
            if index > 0 { result.append(UInt8(ascii: "/")) }
            result += segment
        }
        if trailingSlash, result.last != UInt8(ascii: "/") { result.append(UInt8(ascii: "/")) }
        return result
    }

    // MARK: bytes

    /// ALPHA, DIGIT, `-`, `.`, `_`, `~`.
    private static func isUnreserved(_ byte: UInt8) -> Bool {
        (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte)
            || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_")
            || byte == UInt8(ascii: "~")
    }

    /// A path's bytes besides `%`: unreserved, sub-delims but `;`, `:`, `@` and `/`.
    private static func isPathByte(_ byte: UInt8) -> Bool {
        isUnreserved(byte) || "!$&'()*+,=:@/".utf8.contains(byte)
    }

    /// A query's bytes besides `%`: a path's, `;`, `/` and `?`.
    private static func isQueryByte(_ byte: UInt8) -> Bool {
        isPathByte(byte) || byte == UInt8(ascii: ";") || byte == UInt8(ascii: "?")
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? 0x30 + value : 0x41 + value - 10
    }

    private static func hex(_ byte: UInt8) -> String {
        String(decoding: [hexDigit(byte >> 4), hexDigit(byte & 0xF)], as: UTF8.self)
    }
}
