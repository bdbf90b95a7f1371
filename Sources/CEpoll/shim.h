/*
 * CEpoll: Linux's readiness API (epoll, eventfd) for the proxy's direct relay, which
 * polls the sockets it owns without SwiftNIO. Glibc's Swift module leaves these out.
 */
#ifndef BEEMESH_CEPOLL_SHIM_H
#define BEEMESH_CEPOLL_SHIM_H

#include <sys/epoll.h>
#include <sys/eventfd.h>

#endif
