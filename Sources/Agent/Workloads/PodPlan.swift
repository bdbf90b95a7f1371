import Foundation
import MeshIdentity

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
        }
        return Array(Digest.sha256(Array(text.utf8)).prefix(8)).hexString
    }

    /// Every pod the stored objects ask for.
    static func plan(_ workloads: some Collection<Workload>) -> [DesiredPod] {
        let services = workloads.filter { $0.kind == .service }
        var pods: [DesiredPod] = []
        for workload in workloads.sorted(by: { $0.key < $1.key }) {
            guard let template = workload.template else { continue }
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

    /// The sidecar's configuration for this pod.
    func proxyConfiguration(podIP: String?, agentSocket: String?) -> String {
        var lines = [
            "# Written by beemesh-agent for pod \(namespace)/\(name); replaced when the pod is.",
            "identity:",
            "  certificate: /etc/beemesh/identity/cert.pem",
            "  privateKey: /etc/beemesh/identity/key.pem",
            "  trustBundle: /etc/beemesh/identity/bundle.pem",
            "inbound:",
            "  listen: 0.0.0.0:15008",
            "  ports: [\(template.ports.map(String.init).joined(separator: ", "))]",
            "capture:",
            "  outbound: [127.0.0.1:15001, \"[::1]:15001\"]",
            "  inbound: [0.0.0.0:15006, \"[::]:15006\"]",
            "workload:",
            "  namespace: \(namespace)",
            "  labels: {\(template.labels.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \"\($0.value)\"" }.joined(separator: ", "))}",
            "policies: {directory: /etc/beemesh/policies}",
            "admin: {listen: 127.0.0.1:15000, socket: /var/run/beemesh/proxy.sock}",
            "metrics: {listen: 127.0.0.1:15090}",
        ]
        if let agentSocket {
            lines.append("discovery:")
            lines.append("  agent: \(agentSocket)")
            if let published, let podIP {
                lines.append("  publish:")
                lines.append("    service: \(published.service).\(namespace)")
                lines.append("    endpoint: \(podIP.contains(":") ? "\"[\(podIP)]:15008\"" : "\(podIP):15008")")
                lines.append("    ports: [\(published.ports.map(String.init).joined(separator: ", "))]")
            }
        }
        return lines.joined(separator: "\n") + "\n"
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
        return arguments
    }
}
