/// A 256-bit Kademlia identifier: a node's (the SHA-256 of its public key) or a key's.
///
/// Distance is XOR, compared as an unsigned 256-bit number; the bucket of another ID is
/// the index of the highest bit in which the two differ (255: the far half of the
/// space, 0: the nearest neighbour).
public struct NodeID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Most significant word first.
    public let words: (UInt64, UInt64, UInt64, UInt64)

    public init(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64) {
        words = (a, b, c, d)
    }

    /// From 32 bytes, big-endian.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == 32 else { return nil }
        var values: [UInt64] = [0, 0, 0, 0]
        for (index, byte) in bytes.enumerated() {
            values[index / 8] = values[index / 8] << 8 | UInt64(byte)
        }
        self.init(values[0], values[1], values[2], values[3])
    }

    /// A random ID from the caller's generator (the state machine has none of its own).
    public static func random(using generator: inout some RandomNumberGenerator) -> NodeID {
        NodeID(generator.next(), generator.next(), generator.next(), generator.next())
    }

    public var bytes: [UInt8] {
        [words.0, words.1, words.2, words.3].flatMap { word in
            (0..<8).map { UInt8(truncatingIfNeeded: word >> (56 - 8 * $0)) }
        }
    }

    public static func ^ (left: NodeID, right: NodeID) -> NodeID {
        NodeID(
            left.words.0 ^ right.words.0,
            left.words.1 ^ right.words.1,
            left.words.2 ^ right.words.2,
            left.words.3 ^ right.words.3
        )
    }

    public static func < (left: NodeID, right: NodeID) -> Bool {
        if left.words.0 != right.words.0 { return left.words.0 < right.words.0 }
        if left.words.1 != right.words.1 { return left.words.1 < right.words.1 }
        if left.words.2 != right.words.2 { return left.words.2 < right.words.2 }
        return left.words.3 < right.words.3
    }

    public static func == (left: NodeID, right: NodeID) -> Bool {
        left.words.0 == right.words.0 && left.words.1 == right.words.1 && left.words.2 == right.words.2
            && left.words.3 == right.words.3
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
    }

    /// Leading zero bits (256 for zero).
    public var leadingZeroBitCount: Int {
        if words.0 != 0 { return words.0.leadingZeroBitCount }
        if words.1 != 0 { return 64 + words.1.leadingZeroBitCount }
        if words.2 != 0 { return 128 + words.2.leadingZeroBitCount }
        return 192 + words.3.leadingZeroBitCount
    }

    /// The bucket `other` falls in, seen from `self`; nil for `self`.
    public func bucket(of other: NodeID) -> Int? {
        let zeros = (self ^ other).leadingZeroBitCount
        return zeros == 256 ? nil : 255 - zeros
    }

    /// Whether `a` is closer to `self` than `b` is.
    @inline(__always)
    public func isCloser(_ a: NodeID, than b: NodeID) -> Bool {
        (self ^ a) < (self ^ b)
    }

    /// A random ID in bucket `index` of `self`: the same top `255 - index` bits, bit
    /// `index` flipped, the rest random.
    public func random(inBucket index: Int, using generator: inout some RandomNumberGenerator) -> NodeID {
        precondition((0..<256).contains(index), "bucket \(index)")
        let noise = NodeID.random(using: &generator)
        var result = [words.0, words.1, words.2, words.3]
        let noiseWords = [noise.words.0, noise.words.1, noise.words.2, noise.words.3]
        for word in 0..<4 {
            // Bits are numbered 255 (most significant of word 0) down to 0.
            let high = 255 - 64 * word
            let low = high - 63
            if index < low {
                continue  // the whole word is above the flipped bit: keep ours
            }
            if index > high {
                result[word] = noiseWords[word]  // entirely below: random
                continue
            }
            let position = index - low  // bit position of the flip within this word
            let keepMask: UInt64 = position == 63 ? 0 : ~UInt64(0) << (position + 1)
            let randomMask: UInt64 = position == 0 ? 0 : (UInt64(1) << position) - 1
            result[word] =
                (result[word] & keepMask) | (~result[word] & (UInt64(1) << position))
                | (noiseWords[word] & randomMask)
        }
        return NodeID(result[0], result[1], result[2], result[3])
    }

    /// The first 8 bytes in hex, as logs show IDs.
    public var description: String {
        let hex = String(words.0, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// A node as others reach it: its ID and an address the transport understands.
public struct Contact: Hashable, Sendable, CustomStringConvertible {
    public let id: NodeID
    public let address: String

    public init(id: NodeID, address: String) {
        self.id = id
        self.address = address
    }

    public var description: String { "\(id)@\(address)" }

    public static func == (left: Contact, right: Contact) -> Bool { left.id == right.id }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }
}
