// Package cgroups inspects the host's control groups: which cgroup version provides each resource controller
// tori-run uses, where our own cgroup is in each hierarchy, whether cgroups can be created beneath it, and
// which kernel interface file would enforce each systemd resource directive.
//
// It only looks. It creates one empty child cgroup beneath our own in each hierarchy (the true test of
// delegation) and removes it at once; it never moves a process and never writes a limit. Creating capsule
// cgroups and writing limits is the job of the runtime (through libcontainer).
//
// # Modes
//
//   - Unified (v2): only cgroup2 is mounted, usually at /sys/fs/cgroup. Every controller is a v2 controller,
//     available to us when listed in our cgroup's cgroup.controllers.
//   - Hybrid (v1 + v2): v1 hierarchies at /sys/fs/cgroup/<controller> and cgroup2 at /sys/fs/cgroup/unified.
//     A controller belongs to one hierarchy at a time; on hybrid hosts the resource controllers are bound
//     to v1 (the cgroup2 mount typically offers only hugetlb, or nothing), so limits go through v1.
//   - Legacy (v1): only v1 hierarchies.
//
// Each controller is looked for in a v1 hierarchy first, then in cgroup2.
//
// # Directives
//
// The systemd directive names of the manifest's resources map to interface files as follows. Values are
// written in the capsule's own cgroup.
//
//	directive    cgroup v2 file   cgroup v1 file                        conversion for v1
//	CPUQuota     cpu.max          cpu.cfs_quota_us + cpu.cfs_period_us  period 100000 µs, quota = N% * period / 100
//	CPUWeight    cpu.weight       cpu.shares                            shares = weight * 1024 / 100, clamped 2..262144
//	MemoryMax    memory.max       memory.limit_in_bytes                 bytes, as is
//	MemoryHigh   memory.high      (none; memory.soft_limit_in_bytes)    not enforced: soft limit only reclaims under
//	                                                                    global memory pressure and never throttles
//	IOWeight     io.weight        blkio.bfq.weight or blkio.weight      weight * 500 / 100, clamped 10..1000; the file
//	                                                                    exists once bfq (cfq before 5.0) is loaded,
//	                                                                    but only disks using that scheduler obey it
//	TasksMax     pids.max         pids.max                              as is
//	AllowedCPUs  cpuset.cpus      cpuset.cpus                           as is; v1 also needs cpuset.mems set
//
// The weight conversions are systemd's own (cgroup_cpu_weight_to_shares, cgroup_weight_io_to_blkio), so the
// v1 defaults come out as the kernel's defaults: CPUWeight=100 gives 1024 shares and IOWeight=100 gives 500.
// On v1, Limits reports IOWeight as enforced only when a mounted disk's active scheduler (Host.Disks, read from
// /sys/dev/block/MAJ:MIN/queue/scheduler) is bfq or cfq. On v2, io.weight itself only has an effect on devices
// with io.cost enabled or the bfq scheduler; Limits says so in its note.
//
// # When not to use it
//
// Not to manage cgroups: use github.com/opencontainers/cgroups (through libcontainer) for that. Detect reads
// the calling process's own view (/proc/self), so inside a cgroup namespace or a container it reports what
// that process can do, which is what a runtime started from it could do.
//
// # Testing
//
// DetectFrom takes mountinfo and /proc/self/cgroup text and a Prober that stands in for the cgroup
// filesystem, so tests run on fixture text (see testdata/) rather than on the live kernel.
package cgroups
