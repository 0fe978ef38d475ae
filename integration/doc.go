// Package integration holds tori-run's end-to-end suites: real capsules
// with real mounts, namespaces and cgroups. They need root; they run on the
// hybrid development host (limits through cgroup v1) and, through
// `make test-vm`, inside a cgroup-v2-only QEMU guest.
package integration
