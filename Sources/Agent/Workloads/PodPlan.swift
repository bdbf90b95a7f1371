import Foundation
import MeshConfiguration
import MeshIdentity
import RaftHost

/// One pod the node should run, expanded from the stored objects. Pure: the reconciler
/// compares these with what podman runs.
struct DesiredPod: Sendable, Equatable {
    /// The pod's name in its namespace: a Pod's own name, `<name>-<ordinal>` for the
    /// replicas of a Deployment or StatefulSet.
    let name: String
    let namespace: String
    /// `Kind/namespace/name` of the object that asks for it.
    let owner: String
    let template: PodTemplate
    /// The mesh service this pod's sidecar publishes (a Service that selects it and
    /// whose name is the pod's service account), and its ports.
    let published: (service: String, ports: [UInt16])?

    static func == (left: DesiredPod, right: DesiredPod) -> Bool {
        left.name == right.name && left.namespace == right.namespace && left.owner == right.owner
            && left.template == right.template && left.published?.service == right.published?.service
            && left.published?.ports == right.published?.ports
    }

    /// A StatefulSet's pod: its group (`namespace/name`) and ordinal; nil for others.
    var statefulOrdinal: (group: String, ordinal: Int)? {
        guard owner.hasPrefix("StatefulSet/"), let dash = name.lastIndex(of: "-"),
            let ordinal = Int(name[name.index(after: dash)...])
        else { return nil }
        return ("\(namespace)/\(name[..<dash])", ordinal)
    }

    /// podman's pod names are global: `<name>.<namespace>` (dots never occur in either).
    var podmanName: String { "\(name).\(namespace)" }

    func containerName(_ container: String) -> String { "\(podmanName).\(container)" }

    static let sidecarName = "beemesh-proxy"

    var injected: Bool { template.annotations[Annotations.inject] != "false" }

    /// A digest of everything the pod is made from: a pod whose digest changed is
    /// replaced.
    var specDigest: String {
        var text = "\(owner)|\(template.serviceAccount)|\(published?.service ?? "")|\(published?.ports ?? [])"
        text += "|\(template.labels.sorted { $0.key < $1.key })|\(template.annotations.sorted { $0.key < $1.key })"
        for container in template.containers {
            text += "|\(container.name)|\(container.image)|\(container.command)|\(container.args)"
            text +=
                "|\(container.env.map { "\($0.name)=\($0.value)" })|\(container.ports)|\(container.workingDir ?? "")"
            text += "|\(container.runAsUser.map(String.init) ?? "")|\(container.runAsGroup.map(String.init) ?? "")"
        }
        return Array(Digest.sha256(Array(text.utf8)).prefix(8)).hexString
    }

    /// Every pod the stored objects ask for; with `node`, only those that node runs
    /// (a template naming another node in `spec.nodeName` is that node's).
    static func plan(_ workloads: some Collection<KubernetesObject>, node: String? = nil) -> [DesiredPod] {
        let services = workloads.filter { $0.kind == .service }
        var pods: [DesiredPod] = []
        for workload in workloads.sorted(by: { $0.key < $1.key }) {
            guard let template = workload.template else { continue }
            if let node, let named = template.nodeName, named != node { continue }
            let selecting = services.filter { service in
                service.namespace == workload.namespace
                    && (service.service?.selector ?? [:]).allSatisfy { template.labels[$0.key] == $0.value }
            }
            // A record may be signed only for the service named like the account.
            let published = selecting.first { $0.name == template.serviceAccount }
                .map { ($0.name, $0.service?.ports ?? []) }
            for ordinal in 0..<workload.replicas {
                pods.append(
                    DesiredPod(
                        name: workload.kind == .pod ? workload.name : "\(workload.name)-\(ordinal)",
                        namespace: workload.namespace,
                        owner: workload.key,
                        template: template,
                        published: published
                    )
                )
            }
        }
        return pods
    }

    /// The pod's directory under the run directory: a digest of its podman name, so
    /// that every path in it stays short whatever the names (a unix socket's path has
    /// at most 107 bytes) and two pods never share one.
    var directoryName: String { Self.directoryName(podmanName: podmanName) }

    static func directoryName(podmanName: String) -> String {
        Array(Digest.sha256(Array(podmanName.utf8)).prefix(8)).hexString
    }

    /// The sidecar's mTLS listener in the pod.
    static let mtlsPort: UInt16 = 15008
    /// The workload API in a StatefulSet's pod, on loopback.
    static let workloadAPIPort: UInt16 = 15020

    /// The mTLS endpoint of a pod that is not published on a host port: its pod
    /// address, which only its own node reaches.
    static func endpoint(podIP: String) -> HostPort {
        HostPort(host: podIP, port: Int(mtlsPort))
    }

    /// Whether other pods dial this one at all: it publishes a service record.
    var publishes: Bool { injected && published != nil }

    /// What this pod's sidecar may publish through its own agent socket; `endpoint`
    /// is the address its record names (nil: not known yet).
    func binding(endpoint: HostPort?, trustDomain: TrustDomain) throws -> PodBinding {
        PodBinding(
            pod: "\(namespace)/\(name)",
            identity: try SpiffeID(
                trustDomain: trustDomain,
                namespace: namespace,
                serviceAccount: template.serviceAccount
            )
            .description,
            service: published.map { "\($0.service).\(namespace)" },
            endpoint: endpoint?.description,
            workload: statefulOrdinal.map { WorkloadAPIHandler.Binding(group: $0.group, ordinal: $0.ordinal) }
        )
    }

    /// The sidecar's configuration for this pod: the paths the sidecar container mounts,
    /// capture on the conventional ports, and discovery through the pod's own agent
    /// socket, publishing `endpoint` (the host port that publishes the pod, or its pod
    /// address).
    func sidecarConfiguration(endpoint: HostPort?, agentSocket: String?) -> ProxyConfiguration {
        var configuration = ProxyConfiguration(
            identity: .init(
                certificate: "/etc/beemesh/identity/cert.pem",
                privateKey: "/etc/beemesh/identity/key.pem",
                trustBundle: "/etc/beemesh/identity/bundle.pem"
            )
        )
        configuration.inbound.ports = template.ports
        configuration.capture = .init(
            outbound: [HostPort(host: "127.0.0.1", port: 15001), HostPort(host: "::1", port: 15001)],
            inbound: [HostPort(host: "0.0.0.0", port: 15006), HostPort(host: "::", port: 15006)]
        )
        configuration.workload = .init(namespace: namespace, labels: template.labels)
        if let agentSocket {
            configuration.discovery.agent = agentSocket
            if statefulOrdinal != nil {
                configuration.workloadAPI.listen = HostPort(host: "127.0.0.1", port: Int(Self.workloadAPIPort))
                configuration.workloadAPI.socket =
                    (agentSocket as NSString).deletingLastPathComponent + "/workload.sock"
            }
            if let published, let endpoint {
                var publish = ProxyConfiguration.Publish(service: "\(published.service).\(namespace)")
                publish.endpoint = endpoint
                publish.ports = published.ports
                configuration.discovery.publish = publish
            }
        }
        return configuration
    }

    /// `sidecarConfiguration` as the file the sidecar reads: the value encoded (JSON,
    /// which the sidecar reads as YAML), so no value from a manifest can add a field.
    func proxyConfiguration(endpoint: HostPort?, agentSocket: String?) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let configuration = sidecarConfiguration(endpoint: endpoint, agentSocket: agentSocket)
        return String(decoding: try encoder.encode(configuration), as: UTF8.self) + "\n"
    }

    /// `beemesh-proxy capture install` arguments for this pod's annotations.
    func captureArguments(netns: String) -> [String] {
        var arguments = ["capture", "install", "--netns", netns]
        let annotations = template.annotations
        if let ports = annotations[Annotations.excludeOutboundPorts] {
            arguments += ["--exclude-outbound-ports", ports]
        }
        if let ports = annotations[Annotations.excludeInboundPorts] { arguments += ["--exclude-inbound-ports", ports] }
        if let cidrs = annotations[Annotations.excludeOutboundCIDRs] {
            arguments += ["--exclude-outbound-cidrs", cidrs]
        }
        if annotations[Annotations.allowNonTCP] == "true" { arguments.append("--allow-non-tcp") }
        return arguments
    }
}
