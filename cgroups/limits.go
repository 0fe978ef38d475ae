package cgroups

import (
	"cmp"
	"fmt"
	"strings"
)

// The systemd resource directives Limits reports on, in order.
const (
	CPUQuota    = "CPUQuota"
	CPUWeight   = "CPUWeight"
	MemoryMax   = "MemoryMax"
	MemoryHigh  = "MemoryHigh"
	IOWeight    = "IOWeight"
	TasksMax    = "TasksMax"
	AllowedCPUs = "AllowedCPUs"
)

// Directives lists the directives Limits reports on, in order.
var Directives = []string{CPUQuota, CPUWeight, MemoryMax, MemoryHigh, IOWeight, TasksMax, AllowedCPUs}

// LimitSupport says how one resource directive would be enforced on a host.
type LimitSupport struct {
	Directive string
	// Controller is the controller whose interface file enforces the directive.
	Controller Controller
	// Version is the cgroup version of that controller on this host (0: no hierarchy provides it).
	Version int
	// File is the interface file written, relative to the capsule's cgroup; "" when there is none.
	File string
	// Enforced is true when writing File limits what the directive says it limits.
	Enforced bool
	// Note explains the mapping, a conversion, or why the directive is not enforced.
	Note string
}

// CFSPeriodMicros is the cpu.cfs_period_us (v1) and cpu.max period (v2) used for CPUQuota: 100 ms, as systemd.
const CFSPeriodMicros = 100000

// CPUQuotaToMicros converts CPUQuota=percent% into the quota per CFSPeriodMicros: 80% -> 80000, 200% -> 200000.
func CPUQuotaToMicros(percent float64) int64 {
	return int64(percent * CFSPeriodMicros / 100)
}

// CPUWeightToShares converts a cgroup v2 CPUWeight (1..10000, default 100) into v1 cpu.shares as systemd does:
// shares = weight*1024/100, clamped to [2, 262144]. The default weight 100 becomes the default 1024 shares.
func CPUWeightToShares(weight uint64) uint64 {
	return clamp(weight*1024/100, 2, 262144)
}

// IOWeightToBlkio converts a cgroup v2 IOWeight (1..10000, default 100) into v1 blkio.weight as systemd does:
// weight*500/100, clamped to [10, 1000]. The default 100 becomes the default 500.
func IOWeightToBlkio(weight uint64) uint64 {
	return clamp(weight*500/100, 10, 1000)
}

func clamp(v, lo, hi uint64) uint64 {
	return max(lo, min(v, hi))
}

var directiveController = map[string]Controller{
	CPUQuota: CPU, CPUWeight: CPU, MemoryMax: Memory, MemoryHigh: Memory, IOWeight: IO, TasksMax: PIDs,
	AllowedCPUs: CPUSet,
}

// Limits reports, for each of Directives in order, which kernel interface would enforce it on h and whether it
// would be enforced: the controller must be usable and delegated (we can create the capsule's cgroup), and on
// cgroup v1 the interface file must exist (a child cgroup had it) and really limit what the directive limits.
func Limits(h *Host) []LimitSupport {
	out := make([]LimitSupport, 0, len(Directives))
	for _, d := range Directives {
		out = append(out, limit(h, d))
	}
	return out
}

func limit(h *Host, d string) LimitSupport {
	c := directiveController[d]
	ls := LimitSupport{Directive: d, Controller: c}
	ci, ok := h.Controller(c)
	if !ok || ci.Version == 0 {
		ls.Note = fmt.Sprintf("no cgroup hierarchy provides the %s controller", c)
		if ci.Reason != "" {
			ls.Note += ": " + ci.Reason
		}
		return ls
	}
	ls.Version = ci.Version
	if ci.Version == 2 {
		limitV2(&ls, ci)
	} else {
		limitV1(&ls, ci, h.Disks)
	}
	if ls.Enforced && !ci.Delegated {
		ls.Enforced = false
		ls.Note = fmt.Sprintf("%s would be enforced by %s, but %s", d, ls.File, ci.Reason)
	}
	return ls
}

func limitV2(ls *LimitSupport, ci ControllerInfo) {
	switch ls.Directive {
	case CPUQuota:
		ls.File, ls.Note = "cpu.max", fmt.Sprintf("CPUQuota=N%% is written as \"N*%d/100 %d\" (quota and period in µs)", CFSPeriodMicros, CFSPeriodMicros)
	case CPUWeight:
		ls.File, ls.Note = "cpu.weight", "CPUWeight is written as is (1-10000, default 100)"
	case MemoryMax:
		ls.File, ls.Note = "memory.max", "a hard limit: past it the kernel reclaims, then OOM-kills in the cgroup (see oom_kill in memory.events)"
	case MemoryHigh:
		ls.File, ls.Note = "memory.high", "a throttle: past it the cgroup's allocations are slowed and reclaimed, never OOM-killed"
	case IOWeight:
		ls.File, ls.Note = "io.weight", "proportional, only under contention, and only on devices where io.cost is enabled (io.cost.qos) or that use the bfq scheduler (io.bfq.weight)"
	case TasksMax:
		ls.File, ls.Note = "pids.max", "a hard limit on processes and threads"
	case AllowedCPUs:
		ls.File, ls.Note = "cpuset.cpus", "the CPU list as is (e.g. 0-1); must be a subset of the parent's cpuset.cpus.effective"
	}
	if !ci.Usable {
		ls.Note = fmt.Sprintf("%s needs the %s controller: %s", ls.File, ci.Name, ci.Reason)
		return
	}
	ls.Enforced = true
	if !ci.SubtreeEnabled {
		ls.Note += fmt.Sprintf("; %s is not yet in %s/cgroup.subtree_control: the runtime enables it", ci.Name, ci.Dir)
	}
}

func limitV1(ls *LimitSupport, ci ControllerInfo, disks []Disk) {
	// need reports whether every named file exists in a child cgroup; when no child could be made we cannot
	// tell, and delegation (checked by the caller) decides.
	need := func(files ...string) bool {
		if !ci.Delegated {
			return true
		}
		for _, f := range files {
			if !ci.HasChildFile(f) {
				ls.Note = fmt.Sprintf("%s not found in a child cgroup of %s", f, ci.Dir)
				return false
			}
		}
		return true
	}
	switch ls.Directive {
	case CPUQuota:
		ls.File = "cpu.cfs_quota_us+cpu.cfs_period_us"
		if ls.Enforced = need("cpu.cfs_quota_us", "cpu.cfs_period_us"); ls.Enforced {
			ls.Note = fmt.Sprintf("CFS bandwidth under %s: cpu.cfs_period_us=%d, cpu.cfs_quota_us=N*%d/100 for CPUQuota=N%%", ci.Dir, CFSPeriodMicros, CFSPeriodMicros)
		} else {
			ls.Note += " (kernel built without CONFIG_CFS_BANDWIDTH)"
		}
	case CPUWeight:
		ls.File = "cpu.shares"
		if ls.Enforced = need("cpu.shares"); ls.Enforced {
			ls.Note = fmt.Sprintf("under %s; converted: shares = weight*1024/100 (CPUWeight=100 -> cpu.shares=%d)", ci.Dir, CPUWeightToShares(100))
		}
	case MemoryMax:
		ls.File = "memory.limit_in_bytes"
		if ls.Enforced = need("memory.limit_in_bytes"); ls.Enforced {
			ls.Note = fmt.Sprintf("a hard limit under %s: past it the kernel reclaims, then OOM-kills in the cgroup", ci.Dir)
		}
	case MemoryHigh:
		ls.File = "memory.soft_limit_in_bytes"
		ls.Enforced = false
		ls.Note = "cgroup v1 has no equivalent of memory.high: the nearest, memory.soft_limit_in_bytes, only reclaims under global memory pressure (the whole host short of memory) and never throttles, so MemoryHigh is degraded to a hint here"
	case IOWeight:
		ls.File = "blkio.weight"
		switch {
		case !ci.Delegated:
			ls.Enforced = true // decided by delegation
			return
		case ci.HasChildFile("blkio.bfq.weight"):
			ls.File = "blkio.bfq.weight"
		case ci.HasChildFile("blkio.weight"):
		default:
			ls.Note = fmt.Sprintf("neither blkio.weight nor blkio.bfq.weight exists in a child cgroup of %s: proportional IO weights need the bfq scheduler (cfq before Linux 5.0)", ci.Dir)
			return
		}
		// The weight file only shows the policy is in the kernel; a disk obeys it only with that scheduler.
		var weighted, other []string
		for _, d := range disks {
			desc := fmt.Sprintf("%s %s (%s): %s", d.Source, d.Dev, d.Mount, cmp.Or(d.Scheduler, "unknown"))
			if d.Scheduler == "bfq" || d.Scheduler == "cfq" {
				weighted = append(weighted, desc)
			} else {
				other = append(other, desc)
			}
		}
		conv := fmt.Sprintf("converted: weight = IOWeight*500/100 clamped to 10-1000 (IOWeight=100 -> %d)", IOWeightToBlkio(100))
		if len(weighted) == 0 {
			ls.Note = fmt.Sprintf("%s exists under %s, but no mounted disk uses the bfq scheduler, so weights have no effect [%s]; %s",
				ls.File, ci.Dir, strings.Join(other, "; "), conv)
			return
		}
		ls.Enforced = true
		ls.Note = fmt.Sprintf("under %s, on disks with bfq: %s; %s; only under contention", ci.Dir, strings.Join(weighted, "; "), conv)
		if len(other) > 0 {
			ls.Note += "; not on: " + strings.Join(other, "; ")
		}
	case TasksMax:
		ls.File = "pids.max"
		if ls.Enforced = need("pids.max"); ls.Enforced {
			ls.Note = fmt.Sprintf("a hard limit on processes and threads under %s", ci.Dir)
		}
	case AllowedCPUs:
		ls.File = "cpuset.cpus"
		if ls.Enforced = need("cpuset.cpus", "cpuset.mems"); ls.Enforced {
			ls.Note = fmt.Sprintf("under %s; v1 also needs cpuset.mems set (copied from the parent) before a task can join", ci.Dir)
		}
	}
	if !ci.Usable && ls.Enforced {
		ls.Enforced = false
		ls.Note = fmt.Sprintf("%s needs the %s hierarchy: %s", ls.File, ci.KernelName, ci.Reason)
	}
	ls.Note = strings.TrimSpace(ls.Note)
}
