/*
 * CNetfilter: the distribution's libnftnl and libmnl (nftables over netlink), plus the
 * few kernel constants and calls Swift cannot see.
 *
 * <sys/socket.h> and <netinet/in.h> come before any linux/ header: the kernel's UAPI
 * headers otherwise define the socket structures a second time, and importing this
 * module next to Glibc or Foundation then fails.
 */
#ifndef BEEMESH_CNETFILTER_SHIM_H
#define BEEMESH_CNETFILTER_SHIM_H

#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>

/* setns(2) is declared by <sched.h> only under _GNU_SOURCE. */
static inline int beemesh_enter_network_namespace(int fd) {
    return (int)syscall(SYS_setns, fd, 0x40000000 /* CLONE_NEWNET */);
}

#endif
