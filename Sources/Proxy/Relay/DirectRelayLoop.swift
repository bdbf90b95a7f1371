import CLinux
import Logging
import MeshNet
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A thread that runs direct relays: it owns their sockets, polls them with one
/// edge-triggered epoll set, and moves bytes with plain `read`/`send` (or OpenSSL on
/// the socket) and no channel pipeline in between.
///
/// Each socket is registered once, for input, output and peer close, and never
/// modified: a stream is read until it would block (or a short read shows it empty),
/// and is next read when epoll reports new bytes. A pair that reads its budget without
/// emptying a stream is serviced again before the thread waits.
///
/// Other threads talk to the loop only through its inbox (adopt a relay, cut one,
/// stop), woken by an eventfd. Once stopped (or if polling fails) the loop refuses new
/// relays, and ends every relay it had or was still to take. Idle relays are found by
/// a sweep every quarter of the idle timeout (a timerfd in the same epoll set, so the
/// loop waits with no timeout of its own) that compares each pair's byte count with
/// the last sweep's.
final class DirectRelayLoop: @unchecked Sendable {
    private enum Command {
        case adopt(DirectRelay)
        case cut(DirectRelay)
        case stop
    }

    private let epoll: CInt
    private let wake: CInt
    /// Fires every quarter of the idle timeout (none without one), so that the loop
    /// waits with no timeout of its own.
    private let sweepTimer: CInt
    private let inbox = NIOLockedValueBox<(commands: [Command], stopped: Bool)>(([], false))
    private let idleTimeout: Int64
    private let logger: Logger
    /// Relays on this loop, for the proxy's status and its tests.
    let active = Atomic<Int>(0)
    private let exited = Atomic<Bool>(false)

    /// The loop's thread has ended every relay and returned.
    var hasExited: Bool { exited.load(ordering: .acquiring) }

    // Confined to the loop's thread.
    private var relays: [DirectRelay?] = []
    private var freeSlots: [Int] = []
    private var busy: [Int] = []
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
    private let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: 128)

    private static let wakeToken = UInt64.max
    private static let sweepToken = UInt64.max - 1

    init(name: String, idleTimeout: TimeAmount, logger: Logger) throws {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epoll >= 0 else { throw IOError(errnoCode: errno, reason: "epoll_create1") }
        wake = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        sweepTimer = timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK | TFD_CLOEXEC))
        guard wake >= 0, sweepTimer >= 0 else {
            let error = errno
            for fd in [epoll, wake, sweepTimer] where fd >= 0 { close(fd) }
            throw IOError(errnoCode: error, reason: "eventfd/timerfd_create")
        }
        self.idleTimeout = idleTimeout.nanoseconds
        self.logger = logger
        var failed = false
        for (fd, token) in [(wake, Self.wakeToken), (sweepTimer, Self.sweepToken)] {
            var event = epoll_event()
            event.events = EPOLLIN.rawValue
            event.data.u64 = token
            failed = failed || epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event) != 0
        }
        if self.idleTimeout > 0 {
            let period = max(self.idleTimeout / Int64(RelayState.sweepsPerIdleTimeout), 1_000_000)
            let interval = timespec(tv_sec: Int(period / 1_000_000_000), tv_nsec: Int(period % 1_000_000_000))
            var schedule = itimerspec(it_interval: interval, it_value: interval)
            failed = failed || timerfd_settime(sweepTimer, 0, &schedule, nil) != 0
        }
        // From here on every property is set: a throw runs deinit, which closes them.
        guard !failed else { throw IOError(errnoCode: errno, reason: "epoll_ctl/timerfd_settime") }
        do {
            try SystemThread.start(name: name) { [self] in run() }
        } catch {
            throw IOError(errnoCode: error.code, reason: "pthread_create")
        }
    }

    deinit {
        close(epoll)
        close(wake)
        close(sweepTimer)
    }

    /// Whether the loop still takes relays (a hint: `adopt` decides).
    var isAccepting: Bool { inbox.withLockedValue { !$0.stopped } }

    /// Takes over `relay` (its sockets are already out of their channels); false when
    /// the loop has stopped, and the caller must end the relay itself.
    func adopt(_ relay: DirectRelay) -> Bool {
        active.add(1, ordering: .relaxed)
        guard post(.adopt(relay)) else {
            active.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    /// Ends `relay` now, both sides closed (drain deadline, revoked policy).
    func cut(_ relay: DirectRelay) {
        _ = post(.cut(relay))
    }

    /// Cuts every relay left and ends the thread.
    func stop() {
        _ = post(.stop)
    }

    private func post(_ command: Command) -> Bool {
        let posted = inbox.withLockedValue { inbox in
            guard !inbox.stopped else { return false }
            if case .stop = command { inbox.stopped = true }
            inbox.commands.append(command)
            return true
        }
        if posted {
            var one: UInt64 = 1
            _ = write(wake, &one, 8)
        }
        return posted
    }

    // MARK: the loop's thread

    private func run() {
        while true {
            let count = epoll_wait(epoll, events, 128, busy.isEmpty ? -1 : 0)
            if count < 0 && errno != EINTR {
                logger.critical("epoll_wait failed: the direct relay loop stops", metadata: ["errno": "\(errno)"])
                _ = post(.stop)
                break
            }
            for index in 0..<max(0, Int(count)) {
                dispatch(events[index])
            }
            if !busy.isEmpty {
                let pending = busy
                busy.removeAll(keepingCapacity: true)
                for slot in pending {
                    guard slot < relays.count, let relay = relays[slot] else { continue }
                    settle(relay, relay.pump.resume(scratch: scratch))
                }
            }
            guard drainInbox() else { break }
        }
        for case let relay? in relays {
            end(relay, closing: .cut)
        }
        // Nothing more is taken; what was posted meanwhile is ended here.
        let left = inbox.withLockedValue { inbox in
            inbox.stopped = true
            defer { inbox.commands = [] }
            return inbox.commands
        }
        for case .adopt(let relay) in left {
            relay.pump.closeAll(.cut)
            active.subtract(1, ordering: .relaxed)
            relay.ended()
        }
        scratch.deallocate()
        events.deallocate()
        exited.store(true, ordering: .releasing)
    }

    private func dispatch(_ event: epoll_event) {
        let token = event.data.u64
        if token >= Self.sweepToken {
            var value: UInt64 = 0
            _ = read(token == Self.wakeToken ? wake : sweepTimer, &value, 8)
            if token == Self.sweepToken { sweep() }
            return
        }
        let slot = Int(token >> 1)
        guard slot < relays.count, let relay = relays[slot] else { return }
        let side: RelayPump<RelaySocket>.Side = token & 1 == 0 ? .downstream : .upstream
        let bits = event.events
        let writable = bits & (EPOLLOUT.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
        let outcome = relay.pump.ready(
            side,
            readable: bits & EPOLLIN.rawValue != 0,
            writable: writable,
            hungUp: bits & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0,
            failed: bits & EPOLLERR.rawValue != 0,
            scratch: scratch
        )
        settle(relay, outcome)
    }

    private func settle(_ relay: DirectRelay, _ outcome: RelayPump<RelaySocket>.Outcome) {
        switch outcome {
        case .open:
            if relay.pump.hasMoreWork { busy.append(relay.slot) }
        case .finished:
            end(relay, closing: nil)
        case .aborted(let reason, let detail):
            relay.logger.debug("direct relay aborted", metadata: ["reason": "\(reason)", "detail": "\(detail)"])
            relay.flow?.closing(reason)
            end(relay, closing: .failed)
        }
    }

    /// Returns false on `stop`.
    private func drainInbox() -> Bool {
        let commands = inbox.withLockedValue { inbox in
            defer { inbox.commands.removeAll(keepingCapacity: true) }
            return inbox.commands
        }
        var stop = false
        for command in commands {
            switch command {
            case .adopt(let relay):
                start(relay)
            case .cut(let relay):
                if relay.slot >= 0, relays[relay.slot] === relay { end(relay, closing: .cut) }
            case .stop:
                stop = true
            }
        }
        return !stop
    }

    private func start(_ relay: DirectRelay) {
        let slot = freeSlots.popLast() ?? relays.count
        if slot == relays.count { relays.append(nil) }
        relays[slot] = relay
        relay.slot = slot
        if relay.cutRequested {
            // Cut (a revoking policy, the drain deadline) before it got here.
            end(relay, closing: .cut)
            return
        }
        for side in [RelayPump<RelaySocket>.Side.downstream, .upstream] {
            let socket = relay.socket(side)
            var event = epoll_event()
            event.events = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
            event.data.u64 = UInt64(slot) << 1 | UInt64(side.rawValue)
            guard epoll_ctl(epoll, EPOLL_CTL_ADD, socket.fd, &event) == 0 else {
                relay.logger.error("cannot poll a relayed socket", metadata: ["errno": "\(errno)"])
                relay.flow?.closing(.error)
                end(relay, closing: .failed)
                return
            }
            socket.poller = epoll
        }
        settle(relay, relay.begin(scratch: scratch))
    }

    /// Closes what is still open of `relay`, frees its slot and reports its end.
    /// `how` closes what is still open; nil when the pump closed both streams itself.
    private func end(_ relay: DirectRelay, closing how: RelayClose?) {
        if let how { relay.pump.closeAll(how) }
        relays[relay.slot] = nil
        freeSlots.append(relay.slot)
        relay.slot = -1
        active.subtract(1, ordering: .relaxed)
        relay.ended()
        if relays.count == freeSlots.count {
            relays.removeAll(keepingCapacity: true)
            freeSlots.removeAll(keepingCapacity: true)
        }
    }

    /// Every quarter of the idle timeout: a relay that moved no byte for a whole timeout
    /// (`RelayState.sweep`) is closed.
    private func sweep() {
        for case let relay? in relays where relay.pump.sweep() {
            relay.logger.debug("direct relay idle: closing")
            relay.flow?.closing(.timeout)
            end(relay, closing: .cut)
        }
    }
}
