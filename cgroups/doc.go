// Package cgroups inspects the host's control groups and manages tori-run's own: which cgroup version
// provides each resource controller, where our own cgroup is in each hierarchy, which kernel file enforces
// each systemd resource directive (Detect, Limits), and the cgroups of capsules and their services: create
// with limits, start a process inside, kill a whole tree, count OOM kills, read usage, remove (Group).
//
// Creating, setting limits, freezing, stats and removal go through github.com/opencontainers/cgroups (its
// fs and fs2 managers, what libcontainer uses), so a capsule's cgroup is laid out exactly as libcontainer
// lays out the same CgroupsPath. What that library has no call for is done here directly, with every file
// opened by openat2(RESOLVE_BENEATH) from its hierarchy's mount: cgroup.kill, our own cgroup.subtree_control,
// moving ourselves into a leaf, starting a child inside a v1 cgroup, cgroup.procs of a whole sub-tree.
//
// # The tree
//
//	<base>/tori/<instance>          the capsule: capsule-wide limits; on v2 it holds no process
//	<base>/tori/<instance>/init     the container's PID 1 (libcontainer starts it in the capsule's
//	                                cgroup, the runtime then moves it here with MoveProcess)
//	<base>/tori/<instance>/svc-NAME one per service: its limits, accounting, OOM count, and the unit
//	                                that Kill stops as a whole
//
// <base> is our own cgroup (Create with a relative path), or an explicit parent taken from the root of each
// hierarchy (an absolute path, from --cgroup-parent). On cgroup v1 it is our own cgroup in EACH hierarchy,
// which may differ per hierarchy (here: /process_api/<id> for memory, / for the others); a Group is the same
// relative path in every mounted hierarchy, named ones (name=systemd) and, on a hybrid host, cgroup2 too, so
// that a process in it is in the group wherever one looks.
//
// # Delegation
//
// On cgroup v1 nothing needs enabling: a cgroup may hold processes and have children with controllers.
// On cgroup v2 a cgroup with processes cannot enable controllers for its children ("no internal processes",
// the root exempt). EnsureDelegation therefore moves tori-run itself (never another process) into the leaf
// <base>/supervisor and enables every controller in <base>/cgroup.subtree_control; if any other process is
// in <base> it changes nothing and says so, suggesting --cgroup-parent. A process in <X>/supervisor nests
// under <X>, so a Host detected again after the move finds the same groups. The capsule's group holds no
// process once the init moved to its leaf, which is when Child can enable controllers for the services.
// Path gives libcontainer a relative path on v1 (it nests it under the caller's own cgroup per hierarchy, as
// this package does) and an absolute one on v2 (libcontainer nests a relative v2 path under the PARENT of the
// caller's cgroup, which the move changes).
//
// # Born in the cgroup
//
// A service must never run, even for a moment, outside its cgroup: a process moved after it started could
// fork, allocate or spin before its limits applied, and its children forked meanwhile would escape (moving
// a process after it started is an anti-pattern). StartIn starts the child inside: on v2 with
// clone3(CLONE_INTO_CGROUP) from the group's directory fd; on v1, which has no such flag, by moving one
// locked, then discarded, OS thread into the group's tasks files and forking from it (see StartIn). The fds
// come from SpawnFiles and can be passed to tori-run's init inside the container.
//
// # Killing a tree
//
// Kill writes cgroup.kill on v2 (Linux 5.14+). On v1 it freezes the group (freezer.state FROZEN, hierarchical,
// so nothing in the sub-tree can fork), SIGKILLs every pid in cgroup.procs of the group and its sub-groups,
// thaws so that the frozen processes die, and repeats until the group is empty, within KillTimeout.
//
// # OOM kills
//
// OOMKills reads oom_kill from memory.events on v2 (not "oom", which counts hitting the limit without a
// kill) and from memory.oom_control on v1 (Linux 4.13+). v1 counts a kill only in the victim's own cgroup,
// so the group's count sums its sub-groups, as v2 does by itself.
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
// Detect reads the calling process's own view (/proc/self), so inside a cgroup namespace or a container it
// reports what that process can do. Detect once per process and keep the Host: EnsureDelegation records in it
// that the v2 base is ready. Groups are not safe for concurrent use by several goroutines.
//
// # Testing
//
// DetectFrom takes mountinfo and /proc/self/cgroup text and a Prober that stands in for the cgroup
// filesystem, so tests run on fixture text (see testdata/) rather than on the live kernel. Groups go where
// the Host says the hierarchies are mounted, so the cgroup v2 logic is also tested on a fake tree in a
// temporary directory. The tests of group_live_test.go make real cgroups beneath the test's own (root
// needed) and check that the kernel enforces the limits: through v1 on a hybrid host, through v2 in the
// cgroup-v2-only guest of make test-vm.
package cgroups
