/*
 * CLinux: Linux calls that Glibc's Swift module leaves out, for the proxy's direct
 * relay loops: epoll, eventfd and timerfd (they poll the sockets they own, their
 * inbox and their idle sweep without SwiftNIO), prctl to name their threads, and
 * the peer credentials of a unix socket (SO_PEERCRED).
 */
#ifndef BEEMESH_CLINUX_SHIM_H
#define BEEMESH_CLINUX_SHIM_H

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

/* Names the calling thread (at most 15 bytes are kept), as `top -H` shows it. */
static inline int beemesh_name_thread(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

/* The peer credentials the kernel recorded when a unix socket connected
 * (SO_PEERCRED): the layout of the kernel's `struct ucred`, declared here because
 * glibc declares that only under _GNU_SOURCE, which an imported module cannot count
 * on. */
typedef struct {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} beemesh_peer_credentials;

static const int beemesh_so_peercred = SO_PEERCRED;

#endif
