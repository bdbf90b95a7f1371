import Capture
import Foundation
import Policy

/// The Kubernetes objects the agent runs, as it stores them: Pod, Deployment,
/// StatefulSet (run like a Deployment with stable ordinal names; its Raft group comes
/// later) and Service (names and ports of a set of pods).
///
/// Parsed from YAML with `FILE:LINE: FIELD: reason` errors. Fields the agent does not
/// act on but that real manifests carry (resources, probes, image pull policy, …) are
/// accepted and ignored; any other unknown field is an error, so that a typo is not
/// silently dropped.
public struct KubernetesObject: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        case pod = "Pod"
        case deployment = "Deployment"
        case statefulSet = "StatefulSet"
        case service = "Service"

        /// `pods`, `deployments`, … and the singular forms `beectl delete` accepts.
        public init?(name: String) {
            switch name.lowercased() {
            case "pod", "pods", "po": self = .pod
            case "deployment", "deployments", "deploy": self = .deployment
            case "statefulset", "statefulsets", "sts": self = .statefulSet
            case "service", "services", "svc": self = .service
            default: return nil
            }
        }

        var apiVersion: String { self == .pod || self == .service ? "v1" : "apps/v1" }
    }

    public var kind: Kind
    public var name: String
    public var namespace: String
    public var labels: [String: String]
    public var annotations: [String: String]
    /// Pods to run: 1 for a Pod, `spec.replicas` (default 1) for the others, 0 for a Service.
    public var replicas: Int
    public var template: PodTemplate?
    public var service: ServiceSpec?
    /// When it was first applied (kept across later applies and agent restarts).
    public var created: Date?

    /// `Kind/namespace/name`: what apply, delete and the store key on.
    public var key: String { "\(kind.rawValue)/\(namespace)/\(name)" }
}

/// What every pod of a workload runs.
public struct PodTemplate: Codable, Sendable, Equatable {
    public var labels: [String: String]
    public var annotations: [String: String]
    /// Default `default`: the pod's identity is `spiffe://<td>/ns/<namespace>/sa/<account>`.
    public var serviceAccount: String
    public var containers: [Container]
    /// `spec.nodeName`: the node that runs the pods (until placement exists, the way
    /// to put a workload on a node); nil: the node it is applied to.
    public var nodeName: String? = nil

    /// Every container port of the pod.
    public var ports: [UInt16] { containers.flatMap(\.ports) }
}

public struct Container: Codable, Sendable, Equatable {
    public var name: String
    public var image: String
    public var command: [String]
    public var args: [String]
    public var env: [EnvVar]
    public var ports: [UInt16]
    public var workingDir: String?
    /// `securityContext.runAsUser` and `runAsGroup` (the container's, else the pod's);
    /// nil: the image's user. Never the sidecar's 1337.
    public var runAsUser: UInt32?
    public var runAsGroup: UInt32?
}

public struct EnvVar: Codable, Sendable, Equatable {
    public var name: String
    public var value: String
}

public struct ServiceSpec: Codable, Sendable, Equatable {
    public var selector: [String: String]
    public var ports: [UInt16]
}

/// The annotations the agent reads on a pod template.
public enum Annotations {
    public static let inject = "beemesh.io/inject"
    public static let excludeOutboundPorts = "beemesh.io/exclude-outbound-ports"
    public static let excludeInboundPorts = "beemesh.io/exclude-inbound-ports"
    public static let excludeOutboundCIDRs = "beemesh.io/exclude-outbound-cidrs"
    /// `"true"`: traffic other than TCP may enter and leave the pod (dropped otherwise).
    public static let allowNonTCP = "beemesh.io/allow-non-tcp"
}

extension KubernetesObject {
    /// Ports the sidecar itself uses in every pod: an app may not claim them.
    public static let reservedPorts: Set<UInt16> = [15000, 15001, 15006, 15008, 15053, 15090]

    /// Every object in a YAML text (documents separated by `---`; empty ones skipped).
    /// Throws the first error; nothing is returned then, so an apply changes nothing.
    public static func parse(yaml: String, file: String) throws(LocatedError) -> [KubernetesObject] {
        var workloads: [KubernetesObject] = []
        var keys: Set<String> = []
        for document in try YAMLField.documents(yaml, file: file) {
            if document.isEmpty { continue }
            let workload = try parse(document)
            guard keys.insert(workload.key).inserted else {
                throw document.error("\(workload.key) appears twice in this file")
            }
            workloads.append(workload)
        }
        guard !workloads.isEmpty else {
            throw LocatedError(file: file, line: nil, field: "", reason: "no objects in this file")
        }
        return workloads
    }

    static func parse(_ document: YAMLField) throws(LocatedError) -> KubernetesObject {
        let top = try document.mapping(allowed: ["apiVersion", "kind", "metadata", "spec", "status"])
        let kindField = try top.required("kind")
        let kindName = try kindField.string()
        guard let kind = Kind(rawValue: kindName) else {
            let known = Kind.allCases.map(\.rawValue).joined(separator: ", ")
            throw kindField.error("unknown kind '\(kindName)' (known: \(known))")
        }
        let versionField = try top.required("apiVersion")
        let version = try versionField.string()
        guard version == kind.apiVersion else {
            throw versionField.error("\(kind.rawValue) is apiVersion \(kind.apiVersion), not '\(version)'")
        }
        let metadata = try top.required("metadata").mapping(allowed: [
            "name", "namespace", "labels", "annotations", "uid", "resourceVersion", "creationTimestamp", "generation",
        ])
        let nameField = try metadata.required("name")
        let name = try nameField.string()
        // Pods of a Deployment are named `<name>-<index>`: leave room for the suffix.
        try checkName(name, field: nameField, limit: kind == .pod || kind == .service ? 63 : 57)
        var namespace = "default"
        if let field = metadata.optional("namespace") {
            namespace = try field.string()
            try checkName(namespace, field: field, limit: 63)
        }
        var workload = KubernetesObject(
            kind: kind,
            name: name,
            namespace: namespace,
            labels: try Self.labels(metadata.optional("labels")),
            annotations: try Self.annotations(metadata.optional("annotations")),
            replicas: kind == .service ? 0 : 1
        )
        let spec = try top.required("spec")
        switch kind {
        case .pod:
            workload.template = try podTemplate(
                spec,
                labels: workload.labels,
                annotations: workload.annotations
            )
        case .deployment, .statefulSet:
            let map = try spec.mapping(allowed: [
                "replicas", "selector", "template", "strategy", "minReadySeconds", "revisionHistoryLimit",
                "progressDeadlineSeconds", "serviceName", "podManagementPolicy", "updateStrategy",
            ])
            if let field = map.optional("replicas") {
                let replicas = try field.integer()
                guard (0...100).contains(replicas) else { throw field.error("between 0 and 100, got \(replicas)") }
                workload.replicas = replicas
            }
            let templateMap = try map.required("template").mapping(allowed: ["metadata", "spec"])
            var labels: [String: String] = [:]
            var annotations: [String: String] = [:]
            if let field = templateMap.optional("metadata") {
                let meta = try field.mapping(allowed: ["labels", "annotations", "name", "namespace"])
                labels = try Self.labels(meta.optional("labels"))
                annotations = try Self.annotations(meta.optional("annotations"))
            }
            let selectorField = try map.required("selector")
            let selector = try selectorField.mapping(allowed: ["matchLabels"])
            let matchLabels = try Self.labels(try selector.required("matchLabels"))
            guard !matchLabels.isEmpty, matchLabels.allSatisfy({ labels[$0.key] == $0.value }) else {
                throw selectorField.error("selector.matchLabels must be non-empty and match the template's labels")
            }
            workload.template = try podTemplate(
                try templateMap.required("spec"),
                labels: labels,
                annotations: annotations
            )
        case .service:
            let map = try spec.mapping(allowed: ["selector", "ports", "type", "clusterIP", "sessionAffinity"])
            let selector = try Self.labels(try map.required("selector"))
            var ports: [UInt16] = []
            for item in try map.required("ports").sequence() {
                let port = try item.mapping(allowed: ["port", "targetPort", "name", "protocol"])
                let number = try port.required("port").port()
                if let target = port.optional("targetPort"), try target.port() != number {
                    throw target.error("a targetPort other than the port is not supported (the mesh keeps the port)")
                }
                if let proto = port.optional("protocol"), try proto.string() != "TCP" {
                    throw proto.error("only TCP")
                }
                guard !ports.contains(number) else { throw item.error("duplicate port \(number)") }
                ports.append(number)
            }
            guard !selector.isEmpty else { throw try map.required("selector").error("must not be empty") }
            workload.service = ServiceSpec(selector: selector, ports: ports)
        }
        return workload
    }

    private static let ignoredPodFields: Set<String> = [
        "restartPolicy", "terminationGracePeriodSeconds", "dnsPolicy", "nodeSelector",
        "tolerations", "affinity", "automountServiceAccountToken", "hostname", "subdomain",
    ]
    private static let ignoredContainerFields: Set<String> = [
        "imagePullPolicy", "resources", "livenessProbe", "readinessProbe", "startupProbe",
        "terminationMessagePath", "terminationMessagePolicy", "stdin", "tty",
    ]

    static func podTemplate(
        _ spec: YAMLField,
        labels: [String: String],
        annotations: [String: String]
    ) throws(LocatedError) -> PodTemplate {
        let map = try spec.mapping(
            allowed: ignoredPodFields.union(["containers", "serviceAccountName", "securityContext", "nodeName"])
        )
        var nodeName: String?
        if let field = map.optional("nodeName") {
            let name = try field.string()
            try checkName(name, field: field, limit: 63)
            nodeName = name
        }
        let podSecurity = try securityContext(map.optional("securityContext"))
        var serviceAccount = "default"
        if let field = map.optional("serviceAccountName") {
            serviceAccount = try field.string()
            try checkName(serviceAccount, field: field, limit: 63)
        }
        var containers: [Container] = []
        var portOwners: [UInt16: String] = [:]
        let containersField = try map.required("containers")
        for item in try containersField.sequence() {
            let container = try item.mapping(
                allowed: ignoredContainerFields.union([
                    "name", "image", "command", "args", "env", "ports", "workingDir", "securityContext",
                ])
            )
            let security = try securityContext(container.optional("securityContext"))
            let nameField = try container.required("name")
            let name = try nameField.string()
            try checkName(name, field: nameField, limit: 63)
            guard name != "beemesh-proxy" else { throw nameField.error("'beemesh-proxy' is the sidecar's name") }
            guard !containers.contains(where: { $0.name == name }) else {
                throw nameField.error("duplicate container name '\(name)'")
            }
            let imageField = try container.required("image")
            let image = try imageField.string()
            guard !image.isEmpty, !image.contains(where: \.isWhitespace) else {
                throw imageField.error("an image reference is required")
            }
            var ports: [UInt16] = []
            for portItem in try container.optional("ports")?.sequence() ?? [] {
                let port = try portItem.mapping(allowed: ["containerPort", "name", "protocol", "hostPort"])
                let numberField = try port.required("containerPort")
                let number = try numberField.port()
                guard !reservedPorts.contains(number) else {
                    throw numberField.error("port \(number) is the sidecar's")
                }
                if let owner = portOwners[number] {
                    throw numberField.error("duplicate port \(number) (also in container '\(owner)')")
                }
                portOwners[number] = name
                ports.append(number)
            }
            var env: [EnvVar] = []
            for envItem in try container.optional("env")?.sequence() ?? [] {
                let variable = try envItem.mapping(allowed: ["name", "value"])
                env.append(
                    EnvVar(
                        name: try variable.required("name").string(),
                        value: try variable.optional("value")?.string() ?? ""
                    )
                )
            }
            containers.append(
                Container(
                    name: name,
                    image: image,
                    command: try container.optional("command")?.strings() ?? [],
                    args: try container.optional("args")?.strings() ?? [],
                    env: env,
                    ports: ports,
                    workingDir: try container.optional("workingDir")?.string(),
                    runAsUser: security.user ?? podSecurity.user,
                    runAsGroup: security.group ?? podSecurity.group
                )
            )
        }
        guard !containers.isEmpty else { throw containersField.error("at least one container is required") }
        for key in [Annotations.inject, Annotations.allowNonTCP] {
            if let value = annotations[key], value != "true", value != "false" {
                throw spec.error("annotation \(key) must be \"true\" or \"false\", got '\(value)'")
            }
        }
        do throws(CaptureOptionError) {
            for key in [Annotations.excludeOutboundPorts, Annotations.excludeInboundPorts] {
                if let value = annotations[key] { _ = try CaptureOptions.ports(value, option: key) }
            }
            if let value = annotations[Annotations.excludeOutboundCIDRs] {
                _ = try CaptureOptions.networks(value, option: Annotations.excludeOutboundCIDRs)
            }
        } catch {
            throw spec.error("annotation \(error)")
        }
        return PodTemplate(
            labels: labels,
            annotations: annotations,
            serviceAccount: serviceAccount,
            containers: containers,
            nodeName: nodeName
        )
    }

    /// The uid or gid of the sidecar, which the capture rules exempt: an app that ran
    /// as it would leave capture.
    public static let sidecarID: UInt32 = 1337

    /// `runAsUser` and `runAsGroup` of a pod's or container's `securityContext`. The
    /// fields the agent cannot grant (privileged, added capabilities, escalation) are
    /// refused rather than ignored; other fields real manifests carry are accepted.
    static func securityContext(_ field: YAMLField?) throws(LocatedError) -> (user: UInt32?, group: UInt32?) {
        guard let field else { return (nil, nil) }
        let map = try field.mapping(allowed: [
            "runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups", "seccompProfile",
            "readOnlyRootFilesystem", "allowPrivilegeEscalation", "privileged", "capabilities", "seLinuxOptions",
            "fsGroupChangePolicy", "sysctls",
        ])
        for key in ["privileged", "allowPrivilegeEscalation"] {
            if let flag = map.optional(key), try flag.bool() {
                throw flag.error("not granted: app containers run without privileges and with no-new-privileges")
            }
        }
        if let capabilities = map.optional("capabilities") {
            let caps = try capabilities.mapping(allowed: ["add", "drop"])
            if let add = caps.optional("add"), !(try add.strings()).isEmpty {
                throw add.error("capabilities cannot be added to app containers")
            }
        }
        if let groups = map.optional("supplementalGroups") {
            for item in try groups.sequence() where try item.integer() == Int(sidecarID) {
                throw item.error("gid \(sidecarID) is the sidecar's: the capture exempts it")
            }
        }
        func id(_ key: String) throws(LocatedError) -> UInt32? {
            guard let node = map.optional(key) else { return nil }
            let value = try node.integer()
            guard (0...Int(UInt32.max - 1)).contains(value) else { throw node.error("not a uid or gid: \(value)") }
            guard value != Int(sidecarID) else {
                throw node.error("\(value) is the sidecar's: the capture exempts it, so an app may not run as it")
            }
            return UInt32(value)
        }
        _ = try id("fsGroup")
        return (try id("runAsUser"), try id("runAsGroup"))
    }

    /// Labels as Kubernetes checks them: a key is an optional DNS-subdomain prefix (at
    /// most 253 bytes) and '/', then a name of at most 63 letters, digits, '-', '_' and
    /// '.', starting and ending with a letter or digit; a value is empty or such a name.
    /// Nothing else can reach a sidecar's configuration or a podman label.
    static func labels(_ field: YAMLField?) throws(LocatedError) -> [String: String] {
        guard let field else { return [:] }
        let labels = try field.labels()
        for (key, value) in labels.sorted(by: { $0.key < $1.key }) {
            try checkKey(key, field: field)
            guard value.isEmpty || isQualifiedName(value) else {
                throw field.error(
                    "label \(key): value '\(value.debugDescription.dropFirst().dropLast())' is not valid (at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit)"
                )
            }
        }
        return labels
    }

    /// Annotations: keys as label keys; values any text, at most 256 KiB in all.
    static func annotations(_ field: YAMLField?) throws(LocatedError) -> [String: String] {
        guard let field else { return [:] }
        let annotations = try field.labels()
        for key in annotations.keys.sorted() { try checkKey(key, field: field) }
        guard annotations.reduce(0, { $0 + $1.key.utf8.count + $1.value.utf8.count }) <= 256 << 10 else {
            throw field.error("annotations may hold at most 256 KiB")
        }
        return annotations
    }

    private static func checkKey(_ key: String, field: YAMLField) throws(LocatedError) {
        let parts = key.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let prefixValid =
            parts.count == 1
            || (parts[0].utf8.count <= 253
                && parts[0].split(separator: ".", omittingEmptySubsequences: false).allSatisfy { isDNSLabel($0) })
        guard prefixValid, let name = parts.last, isQualifiedName(name) else {
            throw field.error(
                "'\(key.debugDescription.dropFirst().dropLast())' is not a valid key ([prefix/]name: a DNS subdomain, then at most 63 letters, digits, '-', '_' and '.')"
            )
        }
    }

    private static func isAlphanumeric(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
    }

    /// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63 bytes.
    static func isQualifiedName(_ text: some StringProtocol) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, let last = bytes.last, bytes.count <= 63 else { return false }
        return isAlphanumeric(first) && isAlphanumeric(last)
            && bytes.allSatisfy {
                isAlphanumeric($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".")
            }
    }

    private static func isDNSLabel(_ text: some StringProtocol) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, let last = bytes.last, bytes.count <= 63 else { return false }
        let allowed = { (byte: UInt8) in (0x30...0x39).contains(byte) || (0x61...0x7A).contains(byte) }
        return allowed(first) && allowed(last) && bytes.allSatisfy { allowed($0) || $0 == UInt8(ascii: "-") }
    }

    /// A DNS-1123 label: lower-case letters, digits and '-', starting and ending with
    /// a letter or digit.
    static func checkName(_ name: String, field: YAMLField, limit: Int) throws(LocatedError) {
        let bytes = Array(name.utf8)
        let valid =
            !bytes.isEmpty && bytes.count <= limit
            && bytes.allSatisfy { $0 == UInt8(ascii: "-") || (0x30...0x39).contains($0) || (0x61...0x7A).contains($0) }
            && bytes.first != UInt8(ascii: "-") && bytes.last != UInt8(ascii: "-")
        guard valid else {
            throw field.error(
                "'\(name)' is not a valid name (lower-case letters, digits and '-', at most \(limit) characters)"
            )
        }
    }
}
