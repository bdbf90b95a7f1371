/// A mesh service name, `name.namespace`, as prefaces carry it and configurations
/// name it: 1 to 253 bytes of `[a-z0-9-.]`, not starting or ending with a dot.
public enum ServiceName {
    /// Why `name` is not a service name; nil when it is one.
    public static func problem(_ name: String) -> String? {
        let bytes = name.utf8
        guard !bytes.isEmpty, bytes.count <= 253 else {
            return "service name must be 1 to 253 bytes, got \(bytes.count)"
        }
        let valid = bytes.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."):
                return true
            default:
                return false
            }
        }
        guard valid, bytes.first != UInt8(ascii: "."), bytes.last != UInt8(ascii: ".") else {
            return "service name '\(name)' is not <name>.<namespace> of [a-z0-9-.]"
        }
        return nil
    }
}
