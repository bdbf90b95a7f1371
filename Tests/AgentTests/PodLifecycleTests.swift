import Foundation
import Testing

@testable import Agent

/// The reconciler's decisions, event by event, with exact directives: no podman, no
/// clock, no sleeping. Time is a number of seconds after `t0`.
@Suite struct PodLifecycleTests {
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    static let caNotAfter = t0 + 86_400 * 365

    static func pods(_ names: String...) throws -> [DesiredPod] {
        let yaml = names.map { name in
            """
            apiVersion: v1
            kind: Pod
            metadata: {name: \(name), namespace: shop}
            spec: {serviceAccountName: \(name), containers: [{name: web, image: i}]}
            """
        }
        .joined(separator: "\n---\n")
        return DesiredPod.plan(try KubernetesObject.parse(yaml: yaml, file: "pods.yaml"))
    }

    static func lifecycle() -> PodLifecycle {
        PodLifecycle(settings: .init(certificateTTL: 3600, caNotAfter: caNotAfter))
    }

    static func observation(
        sidecar: PodLifecycle.ContainerState = .running,
        web: PodLifecycle.ContainerState = .running,
        expiry: Date = t0 + 3600,
        socketOpen: Bool = true,
        networkIntact: Bool = true
    ) -> PodLifecycle.Observation {
        .init(
            containers: [DesiredPod.sidecarName: sidecar, "web": web],
            networkIntact: networkIntact,
            identityExpiry: expiry,
            agentSocketOpen: socketOpen
        )
    }

    /// Brings `pod` to running at `t0`: created, its sidecar ready, its apps started.
    static func running(_ pod: DesiredPod, in lifecycle: inout PodLifecycle) {
        _ = lifecycle.pass(desired: [pod], existing: [:], observed: [:], now: t0)
        _ = lifecycle.created(pod.podmanName, now: t0)
        _ = lifecycle.sidecarProbed(pod.podmanName, ready: true, now: t0)
        lifecycle.appsStarted(pod.podmanName)
    }

    @Test func aPodIsCreatedThenWaitsForItsSidecarThenStartsItsApps() throws {
        let pod = try #require(try Self.pods("orders").first)
        let name = pod.podmanName
        var lifecycle = Self.lifecycle()
        #expect(lifecycle.pass(desired: [pod], existing: [:], observed: [:], now: Self.t0) == [.create(pod)])
        #expect(lifecycle.created(name, now: Self.t0).isEmpty, "the apps wait for the sidecar")
        #expect(lifecycle.view(of: name)?.phase == .awaitingSidecar(since: Self.t0))
        #expect(lifecycle.nextWake(now: Self.t0) == Self.t0 + 0.05, "a starting sidecar is asked again soon")
        #expect(lifecycle.tick(now: Self.t0 + 0.05) == [.probeSidecar(pod)])
        #expect(lifecycle.sidecarProbed(name, ready: false, now: Self.t0 + 0.05).isEmpty)
        #expect(lifecycle.sidecarProbed(name, ready: true, now: Self.t0 + 0.1) == [.startApps(pod)])
        lifecycle.appsStarted(name)
        #expect(lifecycle.view(of: name)?.phase == .running)
        #expect(lifecycle.tick(now: Self.t0 + 0.2).isEmpty)
        #expect(lifecycle.nextWake(now: Self.t0 + 0.2) == Self.t0 + 1.2)
        let steady = lifecycle.pass(
            desired: [pod],
            existing: [name: pod.specDigest],
            observed: [name: Self.observation()],
            now: Self.t0 + 1
        )
        #expect(steady.isEmpty)
        #expect(lifecycle.view(of: name)?.phase.name == "Running")
    }

    @Test func aPodWithoutASidecarStartsItsAppsAtOnce() throws {
        let yaml = """
            apiVersion: v1
            kind: Pod
            metadata: {name: tool, namespace: ops, annotations: {beemesh.io/inject: "false"}}
            spec: {containers: [{name: sh, image: i}]}
            """
        let pod = try #require(DesiredPod.plan(try KubernetesObject.parse(yaml: yaml, file: "p.yaml")).first)
        var lifecycle = Self.lifecycle()
        #expect(lifecycle.pass(desired: [pod], existing: [:], observed: [:], now: Self.t0) == [.create(pod)])
        #expect(lifecycle.created(pod.podmanName, now: Self.t0) == [.startApps(pod)])
    }

    /// A sidecar that never answers fails its pod after 15 s; the pod is created again
    /// after 1 s, then 2, 4, … at most 30 s, with the reason in its status meanwhile.
    @Test func aSidecarThatNeverAnswersFailsItsPodWhichIsRetriedAfterABackOff() throws {
        let pod = try #require(try Self.pods("orders").first)
        let name = pod.podmanName
        var lifecycle = Self.lifecycle()
        var now = Self.t0
        var delays: [TimeInterval] = []
        for _ in 0..<7 {
            #expect(lifecycle.pass(desired: [pod], existing: [:], observed: [:], now: now) == [.create(pod)])
            _ = lifecycle.created(name, now: now)
            #expect(lifecycle.tick(now: now + 15) == [.probeSidecar(pod)], "15 s is not more than 15 s")
            now += 15.5
            #expect(lifecycle.tick(now: now) == [.discard(pod: name)])
            let view = try #require(lifecycle.view(of: name))
            #expect(view.phase.name == "Pending" && view.message?.contains("did not become ready within 15 s") == true)
            guard case .backingOff(let retryAt) = view.phase else {
                Issue.record("not backing off: \(view.phase)")
                return
            }
            delays.append(retryAt.timeIntervalSince(now))
            #expect(lifecycle.pass(desired: [pod], existing: [:], observed: [:], now: retryAt - 0.01).isEmpty)
            now = retryAt
        }
        #expect(delays == [1, 2, 4, 8, 16, 30, 30])
        _ = lifecycle.pass(desired: [pod], existing: [:], observed: [:], now: now)
        _ = lifecycle.created(name, now: now)
        _ = lifecycle.sidecarProbed(name, ready: true, now: now)
        lifecycle.appsStarted(name)
        #expect(lifecycle.view(of: name) == PodLifecycle.PodView(phase: .running, message: nil, restarts: [:]))
    }

    /// Finding 8 of the node security review: a pod that could not start held the single
    /// reconciler for 15 s per retry, and an unrelated pod took 15.5 s to start instead
    /// of 0.7 s. Now each pod waits on its own: while one pod's sidecar never answers and
    /// its creation fails, the other is created, probed and started in the same passes
    /// and ticks, and nothing in between waits.
    @Test func onePodsFailureNeverDelaysAnother() throws {
        let pods = try Self.pods("broken", "orders")
        let (broken, orders) = (pods[0], pods[1])
        var lifecycle = Self.lifecycle()
        #expect(
            lifecycle.pass(desired: pods, existing: [:], observed: [:], now: Self.t0) == [
                .create(broken), .create(orders),
            ]
        )
        #expect(lifecycle.created(broken.podmanName, now: Self.t0).isEmpty)
        #expect(lifecycle.created(orders.podmanName, now: Self.t0).isEmpty)
        #expect(lifecycle.tick(now: Self.t0 + 0.05) == [.probeSidecar(broken), .probeSidecar(orders)])
        #expect(lifecycle.sidecarProbed(broken.podmanName, ready: false, now: Self.t0 + 0.05).isEmpty)
        #expect(lifecycle.sidecarProbed(orders.podmanName, ready: true, now: Self.t0 + 0.05) == [.startApps(orders)])
        lifecycle.appsStarted(orders.podmanName)
        #expect(lifecycle.view(of: orders.podmanName)?.phase == .running)

        // The broken pod times out, and its next creation fails outright: the running pod
        // is checked in the same pass, and a third pod is created in it.
        #expect(lifecycle.tick(now: Self.t0 + 16) == [.discard(pod: broken.podmanName)])
        let third = try #require(try Self.pods("third").first)
        let directives = lifecycle.pass(
            desired: pods + [third],
            existing: [orders.podmanName: orders.specDigest],
            observed: [orders.podmanName: Self.observation(web: .stopped(status: "exited", exitCode: 1))],
            now: Self.t0 + 17
        )
        #expect(
            directives == [
                .create(broken), .restartContainer(pod: orders.podmanName, container: "web", restarts: 1),
                .create(third),
            ]
        )
        #expect(
            lifecycle.failed(broken.podmanName, reason: "podman: no such image", now: Self.t0 + 17) == [
                .discard(pod: broken.podmanName)
            ]
        )
        #expect(lifecycle.created(third.podmanName, now: Self.t0 + 17).isEmpty)
        #expect(lifecycle.tick(now: Self.t0 + 17.05) == [.probeSidecar(third)], "the failed pod is not probed")
    }

    /// An exited container is restarted at once, then after 1, 2, 4 … s (its pod shows
    /// CrashLoopBackOff meanwhile); one that ran a minute starts its back-off afresh.
    @Test func anExitedContainerIsRestartedAfterItsBackOff() throws {
        let pod = try #require(try Self.pods("orders").first)
        let name = pod.podmanName
        var lifecycle = Self.lifecycle()
        Self.running(pod, in: &lifecycle)
        func pass(_ web: PodLifecycle.ContainerState, at seconds: TimeInterval) -> [PodLifecycle.Directive] {
            lifecycle.pass(
                desired: [pod],
                existing: [name: pod.specDigest],
                observed: [name: Self.observation(web: web)],
                now: Self.t0 + seconds
            )
        }
        let exited = PodLifecycle.ContainerState.stopped(status: "exited", exitCode: 2)
        #expect(pass(exited, at: 1) == [.restartContainer(pod: name, container: "web", restarts: 1)])
        #expect(lifecycle.view(of: name)?.phase == .running, "restarted: running until seen otherwise")
        #expect(pass(exited, at: 1.5).isEmpty)
        #expect(lifecycle.view(of: name)?.phase.name == "CrashLoopBackOff")
        #expect(pass(exited, at: 2) == [.restartContainer(pod: name, container: "web", restarts: 2)])
        #expect(pass(exited, at: 3.9).isEmpty, "2 s after the second restart")
        #expect(pass(exited, at: 4) == [.restartContainer(pod: name, container: "web", restarts: 3)])
        #expect(pass(.running, at: 5).isEmpty)
        #expect(pass(.running, at: 70).isEmpty, "ran a minute")
        #expect(pass(exited, at: 71) == [.restartContainer(pod: name, container: "web", restarts: 4)], "at once")
        #expect(lifecycle.view(of: name)?.restarts == [DesiredPod.sidecarName: 0, "web": 4])
    }

    /// A back-off that ends wakes the shell for a full pass (which creates the pod
    /// again), not for a spin of ticks: its end is the next wake while it runs, and due
    /// once it passed.
    @Test func aBackOffsEndIsTheNextWakeAndThenDue() throws {
        let pod = try #require(try Self.pods("orders").first)
        var lifecycle = Self.lifecycle()
        _ = lifecycle.pass(desired: [pod], existing: [:], observed: [:], now: Self.t0)
        #expect(lifecycle.failed(pod.podmanName, reason: "no image", now: Self.t0) == [.discard(pod: pod.podmanName)])
        #expect(lifecycle.nextWake(now: Self.t0 + 0.5) == Self.t0 + 1)
        #expect(!lifecycle.retryDue(now: Self.t0 + 0.5))
        #expect(lifecycle.retryDue(now: Self.t0 + 1))
        #expect(lifecycle.nextWake(now: Self.t0 + 1.5) == Self.t0 + 2.5, "an ended back-off is not a wake")
        #expect(lifecycle.pass(desired: [pod], existing: [:], observed: [:], now: Self.t0 + 1.5) == [.create(pod)])
        #expect(!lifecycle.retryDue(now: Self.t0 + 1.5))
    }

    /// A restart podman refused leaves the pod not running.
    @Test func aFailedRestartIsNotRunning() throws {
        let pod = try #require(try Self.pods("orders").first)
        var lifecycle = Self.lifecycle()
        Self.running(pod, in: &lifecycle)
        let exited = Self.observation(web: .stopped(status: "exited", exitCode: 1))
        let directives = lifecycle.pass(
            desired: [pod],
            existing: [pod.podmanName: pod.specDigest],
            observed: [pod.podmanName: exited],
            now: Self.t0 + 1
        )
        #expect(directives == [.restartContainer(pod: pod.podmanName, container: "web", restarts: 1)])
        lifecycle.restartFailed(pod.podmanName)
        #expect(lifecycle.view(of: pod.podmanName)?.phase.name == "Pending")
    }

    @Test func podsNoLongerAskedForOrWhoseObjectsChangedAreRemoved() throws {
        let pod = try #require(try Self.pods("orders").first)
        var lifecycle = Self.lifecycle()
        Self.running(pod, in: &lifecycle)
        let directives = lifecycle.pass(
            desired: [pod],
            existing: [pod.podmanName: "an older digest", "gone.shop": "x"],
            observed: [:],
            now: Self.t0 + 1
        )
        #expect(
            directives == [
                .remove(pod: "gone.shop", reason: "no longer asked for"),
                .remove(pod: pod.podmanName, reason: "its objects changed"),
                .create(pod),
            ]
        )
        #expect(lifecycle.pass(desired: [], existing: [:], observed: [:], now: Self.t0 + 2).isEmpty)
        #expect(lifecycle.view(of: pod.podmanName) == nil, "forgotten")
    }

    /// A node that lost power comes back with its pods' infra containers stopped: a
    /// restarted container would get a new network namespace without capture. The pod
    /// is rebuilt (removed, then created with its capture after the back-off), not
    /// restarted in place, whether podman reports its containers running or stopped.
    @Test(arguments: [PodLifecycle.ContainerState.running, .stopped(status: "exited", exitCode: 137)])
    func aPodWhoseNetworkNamespaceIsGoneIsRebuiltNotRestarted(sidecar: PodLifecycle.ContainerState) throws {
        let pod = try #require(try Self.pods("orders").first)
        let name = pod.podmanName
        var lifecycle = Self.lifecycle()
        Self.running(pod, in: &lifecycle)
        let reason = "its network namespace is gone (the infra container stopped): rebuilt"
        let directives = lifecycle.pass(
            desired: [pod],
            existing: [name: pod.specDigest],
            observed: [name: Self.observation(sidecar: sidecar, networkIntact: false)],
            now: Self.t0 + 5
        )
        #expect(directives == [.remove(pod: name, reason: reason)])
        #expect(lifecycle.view(of: name)?.phase == .backingOff(retryAt: Self.t0 + 6))
        #expect(lifecycle.pass(desired: [pod], existing: [:], observed: [:], now: Self.t0 + 5.5).isEmpty)
        #expect(lifecycle.pass(desired: [pod], existing: [:], observed: [:], now: Self.t0 + 6) == [.create(pod)])
    }

    /// An agent that restarts finds its pods running: it opens their agent sockets
    /// again, and app containers it had not made yet wait for the sidecar.
    @Test func aRestartedAgentTakesOverRunningPods() throws {
        let pod = try #require(try Self.pods("orders").first)
        let name = pod.podmanName
        var lifecycle = Self.lifecycle()
        let directives = lifecycle.pass(
            desired: [pod],
            existing: [name: pod.specDigest],
            observed: [name: Self.observation(web: .missing, socketOpen: false)],
            now: Self.t0
        )
        #expect(directives == [.openAgentSocket(pod)])
        #expect(lifecycle.view(of: name)?.phase == .awaitingSidecar(since: Self.t0))
        #expect(lifecycle.tick(now: Self.t0 + 0.05) == [.probeSidecar(pod)])
        #expect(lifecycle.sidecarProbed(name, ready: true, now: Self.t0 + 0.05) == [.startApps(pod)])
    }

    /// A workload certificate is renewed once under half its lifetime is left, unless
    /// the node CA expires first (a new one would not last longer).
    @Test func anIdentityIsRenewedAtHalfLife() throws {
        let pod = try #require(try Self.pods("orders").first)
        let name = pod.podmanName
        var lifecycle = Self.lifecycle()
        Self.running(pod, in: &lifecycle)
        func pass(expiry: Date, at seconds: TimeInterval) -> [PodLifecycle.Directive] {
            lifecycle.pass(
                desired: [pod],
                existing: [name: pod.specDigest],
                observed: [name: Self.observation(expiry: expiry)],
                now: Self.t0 + seconds
            )
        }
        #expect(pass(expiry: Self.t0 + 3600, at: 1799).isEmpty)
        #expect(pass(expiry: Self.t0 + 3600, at: 1801) == [.renewIdentity(pod)])
        #expect(pass(expiry: Self.caNotAfter, at: 86_400 * 365 - 10).isEmpty, "capped by the node CA")
    }
}
