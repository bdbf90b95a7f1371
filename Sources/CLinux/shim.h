/*
 * CLinux: Linux calls that Glibc's Swift module leaves out, for the proxy's direct
 * relay loops: epoll, eventfd and timerfd (they poll the sockets they own, their
 * inbox and their idle sweep without SwiftNIO), prctl to name their threads, and
 * the peer credentials of a unix socket (SO_PEERCRED), and pipes opened close-on-exec
 * for the children the agent and the tests spawn (`ChildProcess`), which close every
 * descriptor but the standard ones.
 */
#ifndef BEEMESH_CLINUX_SHIM_H
#define BEEMESH_CLINUX_SHIM_H

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <fcntl.h>
#include <spawn.h>

/* glibc declares pipe2 only under _GNU_SOURCE. */
int pipe2(int pipefd[2], int flags);

/* glibc (2.34+) declares this only under _GNU_SOURCE: a spawned child closes every
 * descriptor from `from` on, whatever the libraries in the parent left open. */
int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);

/* A pipe whose two ends close on exec: a child gets only what is dup2'd to it. */
static inline int beemesh_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

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
