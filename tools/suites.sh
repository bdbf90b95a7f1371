# shellcheck shell=bash
# The test suites that start many processes (agents, sidecars, podman pods, labs of
# nodes): tools/test and tools/sanitize run them in a phase of their own, after the
# others, so that they do not crowd the timing checks of the unit and loopback suites
# on a 2-core machine. Sourced, never run.
HEAVY_SUITES='PodmanEndToEndTests|DiscoveryEndToEndTests|LabEndToEndTests'
