/// Scope numbers by text (an exact identity, a namespace, a last path segment), in one
/// open-addressing table built once.
///
/// A peer's keys are hashed once per connection (`IndexKey`); a lookup here starts at
/// the slot that hash picks and compares the stored hash before the text, where a
/// dictionary would hash the key again on every decision.
struct ScopeTable: Sendable {
    private struct Slot: Sendable {
        var hash: Int
        /// 0: vacant (scopes in a table are numbered from 1).
        var scope: Int32
        var text: String
    }

    private let slots: [Slot]
    private let shift: Int

    init(_ scopes: [IndexKey: Int32]) {
        var bits = 3
        while (1 << bits) < scopes.count * 2 { bits += 1 }
        shift = Int.bitWidth - bits
        var slots = [Slot](repeating: Slot(hash: 0, scope: 0, text: ""), count: 1 << bits)
        let mask = slots.count - 1
        for (key, scope) in scopes {
            precondition(scope > 0, "scope numbers in a table start at 1")
            var position = Self.position(key.hash, shift: shift)
            while slots[position].scope != 0 { position = (position + 1) & mask }
            slots[position] = Slot(hash: key.hash, scope: scope, text: key.text)
        }
        self.slots = slots
    }

    private static func position(_ hash: Int, shift: Int) -> Int {
        Int(bitPattern: UInt(bitPattern: hash) >> UInt(shift))
    }

    subscript(key: IndexKey) -> Int32? {
        let mask = slots.count - 1
        var position = Self.position(key.hash, shift: shift)
        while true {
            // Field by field: a copy of the slot would retain its text.
            let scope = slots[position].scope
            if scope == 0 { return nil }
            if slots[position].hash == key.hash && slots[position].text == key.text { return scope }
            position = (position + 1) & mask
        }
    }
}
