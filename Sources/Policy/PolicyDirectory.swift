import Foundation

/// Reads the policy files of a directory: every `*.yaml`, `*.yml` and `*.json`,
/// following symlinks (Kubernetes ConfigMap volumes link each file through `..data`),
/// skipping hidden entries. A missing directory reads as empty.
public enum PolicyDirectory {
    /// Files larger than this are refused rather than read.
    public static let maximumFileSize = 4 * 1024 * 1024

    public static func read(_ directory: String) -> [String: Result<String, LocatedError>] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [:] }
        var contents: [String: Result<String, LocatedError>] = [:]
        for name in names where !name.hasPrefix(".") && isPolicyFile(name) {
            let path = (directory as NSString).appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
                continue
            }
            contents[path] = readFile(path)
        }
        return contents
    }

    static func isPolicyFile(_ name: String) -> Bool {
        name.hasSuffix(".yaml") || name.hasSuffix(".yml") || name.hasSuffix(".json")
    }

    private static func readFile(_ path: String) -> Result<String, LocatedError> {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            return .failure(LocatedError(file: path, line: nil, field: "", reason: "cannot open"))
        }
        defer { try? handle.close() }
        let data = (try? handle.read(upToCount: maximumFileSize + 1)) ?? Data()
        guard data.count <= maximumFileSize else {
            return .failure(
                LocatedError(file: path, line: nil, field: "", reason: "larger than \(maximumFileSize) bytes")
            )
        }
        guard let text = String(data: data, encoding: .utf8) else {
            return .failure(LocatedError(file: path, line: nil, field: "", reason: "not UTF-8"))
        }
        return .success(text)
    }
}
