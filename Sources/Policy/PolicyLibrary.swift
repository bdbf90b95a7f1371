import Dispatch
import Synchronization

/// Every policy file of a directory with the last version of it that parsed.
///
/// Pure: it is handed file contents and keeps state. A file that fails to parse keeps
/// its previous good policies in force and carries its error until it is fixed or
/// removed; the sidecar never falls open and never loses a good file to a typo.
/// A removed file's policies go away (removal is deliberate).
public struct PolicyLibrary: Sendable {
    public struct File: Sendable, Equatable {
        /// The last version that parsed (nil: never parsed).
        public var documents: PolicyDocuments?
        public var policies: [MeshPolicy]? { documents?.mesh }
        /// Why the current version is refused (nil: the current version is in force).
        public var error: LocatedError?
        /// The text last parsed: an unchanged file is not parsed again.
        var text: String?
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

    /// The mesh policies in force: files by name, documents in file order.
    public var policies: [MeshPolicy] {
        files.keys.sorted().flatMap { files[$0]?.documents?.mesh ?? [] }
    }

    /// The egress policies in force, in the same order.
    public var egressPolicies: [EgressPolicy] {
        files.keys.sorted().flatMap { files[$0]?.documents?.egress ?? [] }
    }

    /// Errors of the files whose current version is refused.
    public var errors: [LocatedError] {
        files.keys.sorted().compactMap { files[$0]?.error }
    }

    /// Applies the directory's current contents (file path → text, or the read error).
    public mutating func update(_ contents: [String: Result<String, LocatedError>]) -> Update {
        let before = (policies, egressPolicies)
        var update = Update()
        for name in files.keys where contents[name] == nil {
            files[name] = nil
            update.removed.append(name)
        }
        // Parse every file first (on every core: files are independent), so that a
        // duplicate across files can be refused.
        let names = contents.keys.sorted().filter { name in
            guard case .success(let text) = contents[name]!, let file = files[name] else { return true }
            return file.text != text
        }
        let parsed = Self.parseConcurrently(names.map { contents[$0]! }, names: names)
        for (name, result) in zip(names, parsed) {
            var file = files[name] ?? File(documents: nil, error: nil)
            if case .success(let text) = contents[name]! { file.text = text }
            switch result {
            case .failure(let error):
                file.error = error
            case .success(let documents):
                file.documents = documents
                file.error = nil
            }
            files[name] = file
        }
        var owners: [String: String] = [:]
        for name in files.keys.sorted() {
            guard let documents = files[name]?.documents else { continue }
            let references =
                documents.mesh.map { ("policy \($0.reference)", $0.source.line) }
                + documents.egress.map { ("egress policy \($0.reference)", $0.source.line) }
            if let clash = references.first(where: { owners[$0.0] != nil }) {
                files[name]?.error = LocatedError(
                    file: name,
                    line: clash.1,
                    field: "metadata",
                    reason: "\(clash.0) is already defined in \(owners[clash.0]!)"
                )
                files[name]?.documents = nil
                files[name]?.text = nil  // parse it again once the clash is gone
                continue
            }
            for reference in references { owners[reference.0] = name }
        }
        for name in contents.keys.sorted() {
            if let error = files[name]?.error {
                update.rejected.append(error)
            } else {
                update.loaded.append(name)
            }
        }
        update.changed = policies != before.0 || egressPolicies != before.1
        return update
    }

    private static func parseConcurrently(
        _ inputs: [Result<String, LocatedError>],
        names: [String]
    ) -> [Result<PolicyDocuments, LocatedError>] {
        // A few files (the usual case, and every reload after an edit) are parsed on
        // this thread: no worker threads for a sidecar that does not need them.
        guard inputs.count >= 8 else {
            return inputs.indices.map { index in
                inputs[index].flatMap { text in
                    Result { () throws(LocatedError) in try PolicyDocuments.parse(text, file: names[index]) }
                }
            }
        }
        let results = ResultSlots(count: inputs.count)
        DispatchQueue.concurrentPerform(iterations: inputs.count) { index in
            let result: Result<PolicyDocuments, LocatedError>
            switch inputs[index] {
            case .failure(let error): result = .failure(error)
            case .success(let text):
                result = Result { () throws(LocatedError) in try PolicyDocuments.parse(text, file: names[index]) }
            }
            results.set(index, result)
        }
        return results.values
    }
}

/// One slot per file, written by the parsing threads, each its own.
private final class ResultSlots: @unchecked Sendable {
    private let slots: Mutex<[Result<PolicyDocuments, LocatedError>?]>

    init(count: Int) { slots = Mutex(Array(repeating: nil, count: count)) }

    func set(_ index: Int, _ value: Result<PolicyDocuments, LocatedError>) {
        slots.withLock { $0[index] = value }
    }

    var values: [Result<PolicyDocuments, LocatedError>] { slots.withLock { $0.map { $0! } } }
}
