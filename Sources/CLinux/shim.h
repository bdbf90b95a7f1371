/*
 * CLinux: Linux calls that Glibc's Swift module leaves out, for the proxy's direct
 * relay loops: epoll, eventfd and timerfd (they poll the sockets they own, their
 * inbox and their idle sweep without SwiftNIO), and prctl to name their threads.
 */
#ifndef BEEMESH_CLINUX_SHIM_H
#define BEEMESH_CLINUX_SHIM_H

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>

/* Names the calling thread (at most 15 bytes are kept), as `top -H` shows it. */
static inline int beemesh_name_thread(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

#endif
