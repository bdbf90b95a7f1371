/// Go-style duration strings as operators write them: `90s`, `15m`, `24h`, `720h`,
/// `1h30m`, `250ms`, and `d` for days (`3650d`).
public enum DurationString {
    /// Parses a duration in seconds; nil for anything malformed, negative or empty.
    public static func parse(_ text: String) -> Double? {
        var total = 0.0
        var number = ""
        var unit = ""
        var sawTerm = false
        func flush() -> Bool {
            guard let value = Double(number), !unit.isEmpty else { return false }
            let scale: Double
            switch unit {
            case "ms": scale = 0.001
            case "s": scale = 1
            case "m": scale = 60
            case "h": scale = 3600
            case "d": scale = 86_400
            default: return false
            }
            total += value * scale
            number = ""
            unit = ""
            sawTerm = true
            return true
        }
        for character in text {
            if character.isNumber || character == "." {
                if !unit.isEmpty { guard flush() else { return nil } }
                number.append(character)
            } else if character.isLetter {
                guard !number.isEmpty else { return nil }
                unit.append(character)
            } else {
                return nil
            }
        }
        guard flush(), sawTerm, total >= 0 else { return nil }
        return total
    }

    /// Formats seconds compactly, e.g. `23h59m`, `30s`.
    public static func format(_ seconds: Double) -> String {
        var remaining = Int(seconds.rounded())
        if remaining < 0 { return "-" + format(-seconds) }
        if remaining == 0 { return "0s" }
        var parts = ""
        for (size, suffix) in [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")] where remaining >= size {
            parts += "\(remaining / size)\(suffix)"
            remaining %= size
        }
        return parts
    }
}
