import Foundation
import MeshConfiguration
import Policy
import Testing

@testable import Agent

@Suite struct ManifestTests {
    static let demo = """
        apiVersion: v1
        kind: Service
        metadata: {name: orders}
        spec:
          selector: {app: orders}
          ports: [{port: 8080, targetPort: 8080, protocol: TCP}]
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: orders, namespace: default, labels: {team: shop}}
        spec:
          replicas: 2
          selector: {matchLabels: {app: orders}}
          template:
            metadata:
              labels: {app: orders, tier: api}
              annotations: {beemesh.io/exclude-outbound-ports: "5432"}
            spec:
              serviceAccountName: orders
              containers:
                - name: web
                  image: localhost/app:1
                  imagePullPolicy: IfNotPresent
                  command: [/bin/httpd]
                  args: [-f, -p, "8080"]
                  env: [{name: MODE, value: demo}]
                  ports: [{containerPort: 8080, name: http}]
                  resources: {limits: {cpu: 100m}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: tool, namespace: ops, annotations: {beemesh.io/inject: "false"}}
        spec:
          containers: [{name: sh, image: localhost/app:1}]
        """

    @Test func aDemoManifestBecomesObjectsAndPods() throws {
        let workloads = try KubernetesObject.parse(yaml: Self.demo, file: "demo.yaml")
        #expect(workloads.map(\.key) == ["Service/default/orders", "Deployment/default/orders", "Pod/ops/tool"])
        let deployment = workloads[1]
        #expect(deployment.replicas == 2 && deployment.template?.serviceAccount == "orders")
        #expect(deployment.template?.containers.first?.env == [EnvVar(name: "MODE", value: "demo")])
        #expect(workloads[0].service == ServiceSpec(selector: ["app": "orders"], ports: [8080]))

        let pods = DesiredPod.plan(workloads)
        #expect(pods.map(\.podmanName) == ["orders-0.default", "orders-1.default", "tool.ops"])
        #expect(pods[0].published?.service == "orders" && pods[0].published?.ports == [8080])
        #expect(pods[0].injected && !pods[2].injected && pods[2].published == nil)
        #expect(pods[0].specDigest == pods[1].specDigest && pods[0].specDigest != pods[2].specDigest)
        #expect(pods[0].captureArguments(netns: "/run/netns/x").suffix(2) == ["--exclude-outbound-ports", "5432"])
        let text = try pods[0].proxyConfiguration(
            endpoint: DesiredPod.endpoint(podIP: "10.88.0.7"),
            agentSocket: "/var/run/beemesh-agent/agent.sock"
        )
        let proxy = try ProxyConfiguration.parse(yaml: text, file: "proxy.yaml")
        #expect(proxy.discovery.publish?.service == "orders.default" && proxy.discovery.publish?.ports == [8080])
        #expect(proxy.discovery.publish?.endpoint == HostPort(host: "10.88.0.7", port: 15008))
        #expect(proxy.inbound.ports == [8080] && proxy.workload.labels == ["app": "orders", "tier": "api"])
        #expect(proxy.flows.record && proxy.capture.inbound.count == 2, "\(text)")
    }

    /// Finding 5 of the node security review: a label value carried `"}`, a newline and
    /// `#` into the sidecar's hand-written YAML and turned flow recording off, the log
    /// level to trace, and added a listener. Such values are refused as Kubernetes
    /// refuses them, and the configuration is encoded, so a value is only ever a value.
    @Test func aLabelValueCannotWriteTheSidecarsConfiguration() throws {
        let injected = "x\"}\nflows: {record: false}\nlogLevel: trace #"
        let manifest = """
            apiVersion: v1
            kind: Pod
            metadata:
              name: sec
              labels: {app: \(String(decoding: try JSONEncoder().encode(injected), as: UTF8.self))}
            spec: {containers: [{name: web, image: i}]}
            """
        #expect(throws: LocatedError.self) { try KubernetesObject.parse(yaml: manifest, file: "m.yaml") }
        // The encoder alone holds too, for a value that got past the manifest reader.
        let plain = try KubernetesObject.parse(
            yaml: manifest.replacingOccurrences(of: "labels: {app:", with: "annotations: {a:"),
            file: "m.yaml"
        )
        let planned = try #require(DesiredPod.plan(plain).first)
        let pod = DesiredPod(
            name: planned.name,
            namespace: planned.namespace,
            owner: planned.owner,
            template: PodTemplate(
                labels: ["app": injected],
                annotations: [:],
                serviceAccount: "default",
                containers: planned.template.containers
            ),
            published: nil
        )
        let proxy = try ProxyConfiguration.parse(
            yaml: try pod.proxyConfiguration(endpoint: DesiredPod.endpoint(podIP: "10.88.0.9"), agentSocket: nil),
            file: "proxy.yaml"
        )
        #expect(proxy.flows.record && proxy.logLevel == .info && proxy.workload.labels == ["app": injected])
    }

    @Test func aServiceIsPublishedOnlyUnderTheAccountNamedLikeIt() throws {
        let yaml = Self.demo.replacingOccurrences(of: "serviceAccountName: orders", with: "serviceAccountName: other")
        let pods = DesiredPod.plan(try KubernetesObject.parse(yaml: yaml, file: "demo.yaml"))
        #expect(pods[0].published == nil, "a record signed by 'other' would be refused for orders")
    }

    @Test(arguments: [
        ("kind: Job\napiVersion: batch/v1\nmetadata: {name: a}\nspec: {}", "m.yaml:1: kind: unknown kind 'Job'"),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: web}]",
            "m.yaml:5: spec.containers[0].image: is required"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: Orders_1}\nspec: {containers: [{name: w, image: i}]}",
            "m.yaml:3: metadata.name: 'Orders_1' is not a valid name"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n    - {name: w, image: i, ports: [{containerPort: 80}]}\n    - {name: x, image: i, ports: [{containerPort: 80}]}",
            "m.yaml:7: spec.containers[1].ports[0].containerPort: duplicate port 80 (also in container 'w')"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: w, image: i, ports: [{containerPort: 15008}]}]}",
            "m.yaml:4: spec.containers[0].ports[0].containerPort: port 15008 is the sidecar's"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: w, image: i, imagePull: x}]}",
            "m.yaml:4: spec.containers[0].imagePull: unknown field"
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {app: b}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: w, image: i}]}",
            "m.yaml:5: spec.selector: selector.matchLabels must be non-empty and match"
        ),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}", "m.yaml:1: spec: is required"),
        (
            "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {selector: {a: b}, ports: [{port: 80, targetPort: 8080}]}",
            "m.yaml:4: spec.ports[0].targetPort: a targetPort other than the port is not supported"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, annotations: {beemesh.io/exclude-outbound-ports: \"http\"}}\nspec: {containers: [{name: w, image: i}]}",
            "m.yaml:4: spec: annotation"
        ),
        ("", "m.yaml: no objects in this file"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: [", "m.yaml:5: not valid YAML"),
        // Finding 3 of the node security review: an app running as the sidecar's ids
        // is exempt from capture; nor may it be granted what would let it switch to them.
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: w, image: i, securityContext: {runAsUser: 1337}}]}",
            "m.yaml:4: spec.containers[0].securityContext.runAsUser: 1337 is the sidecar's"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {securityContext: {runAsGroup: 1337}, containers: [{name: w, image: i}]}",
            "m.yaml:4: spec.securityContext.runAsGroup: 1337 is the sidecar's"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {securityContext: {supplementalGroups: [5, 1337]}, containers: [{name: w, image: i}]}",
            "m.yaml:4: spec.securityContext.supplementalGroups[1]: gid 1337 is the sidecar's"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: w, image: i, securityContext: {privileged: true}}]}",
            "m.yaml:4: spec.containers[0].securityContext.privileged: not granted"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: w, image: i, securityContext: {capabilities: {add: [SETUID]}}}]}",
            "m.yaml:4: spec.containers[0].securityContext.capabilities.add: capabilities cannot be added"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: \"a b\"}}\nspec: {containers: [{name: w, image: i}]}",
            "m.yaml:3: metadata.labels: label app: value 'a b' is not valid"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {\"-app\": x}}\nspec: {containers: [{name: w, image: i}]}",
            "m.yaml:3: metadata.labels: '-app' is not a valid key"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, annotations: {\"Bad.Prefix/x\": y}}\nspec: {containers: [{name: w, image: i}]}",
            "m.yaml:3: metadata.annotations: 'Bad.Prefix/x' is not a valid key"
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: \(String(repeating: "x", count: 64))}}\nspec: {containers: [{name: w, image: i}]}",
            "m.yaml:3: metadata.labels: label app: value 'xxxx"
        ),
    ])
    func badManifestsNameFileLineAndField(_ yaml: String, _ expected: String) {
        #expect {
            _ = try KubernetesObject.parse(yaml: yaml, file: "m.yaml")
        } throws: { error in
            "\(error)".hasPrefix(expected)
        }
    }

    @Test func anObjectTwiceInOneFileIsRefused() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: w, image: i}]}\n"
        #expect(throws: (any Error).self) { try KubernetesObject.parse(yaml: pod + "---\n" + pod, file: "m.yaml") }
    }

    @Test func runAsIDsReachPodmanAndNeverTheSidecars() throws {
        let yaml = """
            apiVersion: v1
            kind: Pod
            metadata: {name: a}
            spec:
              securityContext: {runAsUser: 1000, runAsGroup: 1000}
              containers:
                - {name: w, image: i, securityContext: {runAsUser: 2000, capabilities: {drop: [ALL]}}}
                - {name: v, image: i}
            """
        let containers = try #require(
            try KubernetesObject.parse(yaml: yaml, file: "m.yaml").first?.template?.containers
        )
        #expect(containers.map(\.runAsUser) == [2000, 1000] && containers.map(\.runAsGroup) == [1000, 1000])
        #expect(PodRuntime.appUser(imageUser: "app:app", runAsUser: 2000, runAsGroup: nil) == "2000:app")
        #expect(PodRuntime.appUser(imageUser: nil, runAsUser: nil, runAsGroup: 5) == "0:5")
        #expect(PodRuntime.appUser(imageUser: "1000", runAsUser: nil, runAsGroup: nil) == "1000:0", "never a bare uid")
        #expect(PodRuntime.appUser(imageUser: nil, runAsUser: nil, runAsGroup: nil) == nil)
        for (image, user, group) in [
            ("1337", nil, nil), ("0:1337", nil, nil), ("app:1337", UInt32(5), nil), ("01337", nil, nil),
            ("app", nil, nil), ("0:staff", nil, nil),
        ]
            as [(String, UInt32?, UInt32?)]
        {
            #expect(
                PodRuntime.sidecarIDRefusal(imageUser: image, runAsUser: user, runAsGroup: group) != nil,
                "\(image)"
            )
        }
        #expect(PodRuntime.sidecarIDRefusal(imageUser: "1337:1337", runAsUser: 5, runAsGroup: 5) == nil)
        #expect(PodRuntime.sidecarIDRefusal(imageUser: "app:staff", runAsUser: 5, runAsGroup: 5) == nil)
        #expect(PodRuntime.sidecarIDRefusal(imageUser: "root", runAsUser: nil, runAsGroup: nil) == nil)
        #expect(PodRuntime.sidecarIDRefusal(imageUser: nil, runAsUser: nil, runAsGroup: nil) == nil)
        #expect(
            PodRuntime.appCapabilitiesDropped.contains("CAP_SETUID")
                && PodRuntime.appCapabilitiesDropped.contains("CAP_SETGID")
        )
    }
}
