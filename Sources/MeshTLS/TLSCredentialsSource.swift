import Logging
import MeshIdentity
import Metrics
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// Where a workload's credentials live on disk.
public struct CredentialPaths: Sendable, Equatable {
    public var certificate: String
    public var privateKey: String
    public var trustBundle: String

    public init(certificate: String, privateKey: String, trustBundle: String) {
        self.certificate = certificate
        self.privateKey = privateKey
        self.trustBundle = trustBundle
    }
}

/// The current `TLSContext`, rebuilt when the credential files change.
///
/// The agent replaces the files atomically (rename, or a symlink swap as with Kubernetes
/// volumes); each check compares the device, inode, size and modification time of the
/// three files as reached through symlinks. New connections take `current`; a live
/// connection keeps the context it was created with, so rotation drops nothing. A set
/// of files that does not load (mismatched key, expired leaf, half-written bundle) is
/// logged and counted in `beemesh_tls_credential_reload_failures_total`, and the last
/// good context stays in force.
public final class TLSCredentialsSource: Sendable {
    public let paths: CredentialPaths
    private let logger: Logger
    private let reloads = Counter(label: "beemesh_tls_credential_reloads_total")
    private let reloadFailures = Counter(label: "beemesh_tls_credential_reload_failures_total")
    private let state: NIOLockedValueBox<(context: TLSContext, fingerprint: [FileFingerprint])>

    /// Loads the credentials once; throws if they are unusable at start.
    public init(paths: CredentialPaths, logger: Logger) throws {
        self.paths = paths
        self.logger = logger
        let fingerprint = TLSCredentialsSource.fingerprint(paths)
        let context = try TLSCredentialsSource.build(paths)
        self.state = NIOLockedValueBox((context, fingerprint))
        logger.info(
            "loaded workload identity",
            metadata: [
                "spiffe_id": "\(context.identity.map { "\($0)" } ?? "none")",
                "not_after": "\(context.credentials.leaf.notAfter)",
            ]
        )
    }

    /// The context new connections should use.
    public var current: TLSContext { state.withLockedValue { $0.context } }

    /// Reloads if any file changed. Returns true when a new context was installed.
    @discardableResult
    public func reloadIfChanged() -> Bool {
        let fingerprint = TLSCredentialsSource.fingerprint(paths)
        guard fingerprint != state.withLockedValue({ $0.fingerprint }) else { return false }
        do {
            let context = try TLSCredentialsSource.build(paths)
            state.withLockedValue { $0 = (context, fingerprint) }
            reloads.increment()
            logger.info(
                "reloaded workload identity",
                metadata: [
                    "spiffe_id": "\(context.identity.map { "\($0)" } ?? "none")",
                    "serial": "\(context.credentials.leaf.serialNumber)",
                    "not_after": "\(context.credentials.leaf.notAfter)",
                ]
            )
            return true
        } catch {
            // Remember the broken fingerprint so the error is logged once per change.
            state.withLockedValue { $0.fingerprint = fingerprint }
            reloadFailures.increment()
            logger.error(
                "credential files changed but do not load; keeping the previous identity",
                metadata: ["error": "\(error)"]
            )
            return false
        }
    }

    private static func build(_ paths: CredentialPaths) throws -> TLSContext {
        let credentials = try WorkloadCredentials.load(
            certificate: paths.certificate,
            key: paths.privateKey,
            bundle: paths.trustBundle
        )
        return try TLSContext(credentials: credentials)
    }

    struct FileFingerprint: Equatable, Sendable {
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modifiedSeconds: Int
        var modifiedNanoseconds: Int
    }

    private static func fingerprint(_ paths: CredentialPaths) -> [FileFingerprint] {
        [paths.certificate, paths.privateKey, paths.trustBundle].map { path in
            var info = stat()
            guard stat(path, &info) == 0 else {
                return FileFingerprint(device: 0, inode: 0, size: -1, modifiedSeconds: 0, modifiedNanoseconds: 0)
            }
            return FileFingerprint(
                device: UInt64(info.st_dev),
                inode: UInt64(info.st_ino),
                size: Int64(info.st_size),
                modifiedSeconds: info.st_mtim.tv_sec,
                modifiedNanoseconds: info.st_mtim.tv_nsec
            )
        }
    }
}
