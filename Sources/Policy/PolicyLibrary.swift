/// Every policy file of a directory with the last version of it that parsed.
///
/// Pure: it is handed file contents and keeps state. A file that fails to parse keeps
/// its previous good policies in force and carries its error until it is fixed or
/// removed; the sidecar never falls open and never loses a good file to a typo.
/// A removed file's policies go away (removal is deliberate).
public struct PolicyLibrary: Sendable {
    public struct File: Sendable, Equatable {
        /// The last version that parsed (nil: never parsed).
        public var policies: [MeshPolicy]?
        /// Why the current version is refused (nil: the current version is in force).
        public var error: LocatedError?
    }

    /// What changed in one update.
    public struct Update: Sendable, Equatable {
        public var loaded: [String] = []
        public var removed: [String] = []
        public var rejected: [LocatedError] = []
        /// Whether the policies in force differ from before.
        public var changed = false
    }

    public private(set) var files: [String: File] = [:]

    public init() {}

    /// The policies in force: files by name, documents in file order.
    public var policies: [MeshPolicy] {
        files.keys.sorted().flatMap { files[$0]?.policies ?? [] }
    }

    /// Errors of the files whose current version is refused.
    public var errors: [LocatedError] {
        files.keys.sorted().compactMap { files[$0]?.error }
    }

    /// Applies the directory's current contents (file path → text, or the read error).
    public mutating func update(_ contents: [String: Result<String, LocatedError>]) -> Update {
        let before = policies
        var update = Update()
        for name in files.keys where contents[name] == nil {
            files[name] = nil
            update.removed.append(name)
        }
        // Parse every file first, so that a duplicate across files can be refused.
        for name in contents.keys.sorted() {
            var file = files[name] ?? File(policies: nil, error: nil)
            switch contents[name]! {
            case .failure(let error):
                file.error = error
            case .success(let text):
                do {
                    file.policies = try MeshPolicy.parse(text, file: name)
                    file.error = nil
                } catch {
                    file.error = error
                }
            }
            files[name] = file
        }
        var owners: [String: String] = [:]
        for name in files.keys.sorted() {
            guard let policies = files[name]?.policies else { continue }
            if let clash = policies.first(where: { owners[$0.reference] != nil }) {
                files[name]?.error = LocatedError(
                    file: name,
                    line: clash.source.line,
                    field: "metadata",
                    reason: "policy \(clash.reference) is already defined in \(owners[clash.reference]!)"
                )
                files[name]?.policies = nil
                continue
            }
            for policy in policies { owners[policy.reference] = name }
        }
        for name in contents.keys.sorted() {
            if let error = files[name]?.error {
                update.rejected.append(error)
            } else {
                update.loaded.append(name)
            }
        }
        update.changed = policies != before
        return update
    }
}
