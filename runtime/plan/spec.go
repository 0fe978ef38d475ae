package plan

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moby/sys/capability"
	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tori-run/tori-run/specs"
)

// DefaultCaps is podman's default capability set (containers/common
// DefaultCapabilities): Docker's 14 without CAP_NET_RAW (raw and packet
// sockets: sniffing and spoofing on the host's network), CAP_MKNOD (device
// nodes) and CAP_AUDIT_WRITE.
var DefaultCaps = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
	"CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
}

// Capabilities is the capability set of a capsule: the default, less what
// the manifest drops ("ALL": everything), plus what it adds. Each added name
// must be one the kernel has (Facts.LastCap).
func Capabilities(m *specs.Manifest, f Facts) ([]string, error) {
	var caps []string
	if !slices.Contains(m.Capabilities.Drop, "ALL") {
		for _, c := range DefaultCaps {
			if !slices.Contains(m.Capabilities.Drop, c) {
				caps = append(caps, c)
			}
		}
	}
	last := capability.Cap(f.LastCap)
	for _, a := range m.Capabilities.Add {
		known := false
		for _, c := range capability.ListKnown() {
			if "CAP_"+strings.ToUpper(c.String()) == a {
				known = true
				if c > last {
					return nil, fmt.Errorf("%s: capabilities.add: this kernel has no %s (its last capability is CAP_%s); drop it from the manifest or run on a newer kernel",
						m.Source, a, strings.ToUpper(last.String()))
				}
			}
		}
		if !known {
			return nil, fmt.Errorf("%s: capabilities.add: unknown capability %s", m.Source, a)
		}
		if !slices.Contains(caps, a) {
			caps = append(caps, a)
		}
	}
	return caps, nil
}

// SeccompMode says which system call filter a capsule gets, for validate,
// spec and status: "default" (tori-run's profile), "unconfined", or
// "profile FILE".
func SeccompMode(m *specs.Manifest) string {
	switch m.Seccomp {
	case "":
		return "default"
	case specs.SeccompUnconfined:
		return specs.SeccompUnconfined
	}
	return "profile " + m.Seccomp
}

// RecursiveRO is the option of a read-only bind that makes every submount
// read-only too: "rro" (mount_setattr) from kernel 5.12 on, else "ro".
func RecursiveRO(f Facts) string {
	if v, err := ParseKernel(f.Kernel); err == nil && !v.Less(KernelVersion{5, 12}) {
		return "rro"
	}
	return "ro"
}

// buildSpec is the OCI runtime-spec config of the instance. Its process is
// tori-run's own init; the services are started by it later, so the spec's
// process is not a service.
func buildSpec(p *Plan, in Input, f Facts) (*rspec.Spec, error) {
	m := in.Manifest
	caps := p.Capabilities
	unified := f.Cgroup == CgroupV2
	rro := RecursiveRO(f)
	s := &rspec.Spec{
		Version:  rspec.Version,
		Hostname: m.Name,
		Root:     &rspec.Root{Path: p.Paths.Rootfs, Readonly: true},
		Process: &rspec.Process{
			Args: initArgv(f),
			// No GOMEMLIMIT for the init: its Go start-up alone (the whole
			// tori-run binary's package init) passes 4 MiB, and under such a
			// limit the collector ran without pause: +300 ms to every start.
			Env:             []string{"PATH=" + CapsulePath},
			Cwd:             "/",
			User:            rspec.User{UID: 0, GID: 0},
			NoNewPrivileges: true,
			Capabilities:    &rspec.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
		},
		Mounts: defaultMounts(),
		Linux: &rspec.Linux{
			CgroupsPath:   p.Cgroup,
			Namespaces:    namespaces(m, unified),
			MaskedPaths:   slices.Clone(maskedPaths),
			ReadonlyPaths: slices.Clone(readonlyPaths),
		},
	}
	var err error
	if s.Linux.Seccomp, err = Seccomp(m, in.SeccompProfile, caps, unified, f); err != nil {
		return nil, err
	}
	if hostLayer(m) {
		// The host layer binds the host's system folders read-only; a folder
		// that is a symlink on the host is made again as one (RootLinks).
		for _, d := range f.HostDirs {
			if d.Link == "" {
				s.Mounts = append(s.Mounts, rspec.Mount{Destination: d.Name, Type: "bind", Source: d.Name, Options: []string{"rbind", rro, "nosuid", "nodev"}})
			}
		}
		for _, e := range f.Etc {
			if e.Link == "" {
				e := "/etc/" + e.Name
				s.Mounts = append(s.Mounts, rspec.Mount{Destination: e, Type: "bind", Source: e, Options: []string{"rbind", rro, "nosuid", "nodev"}})
			}
		}
	} // rootfs layers: the root itself is their overlay
	// The init (and tori-run, when it is the init or is given besides),
	// read-only: the capsule can run it, never replace it.
	var tori []rspec.Mount
	if f.Init != "" {
		tori = append(tori, rspec.Mount{Destination: CapsuleInit, Type: "bind", Source: f.Init, Options: []string{"bind", "ro", "nosuid", "nodev"}})
	}
	if f.Binary != "" || f.Init == "" {
		tori = append(tori, rspec.Mount{Destination: CapsuleBinary, Type: "bind", Source: f.Binary, Options: []string{"bind", "ro", "nosuid", "nodev"}})
	}
	app := in.App
	if app == "" {
		app = p.Paths.App
	}
	appOpts := []string{"bind", "nosuid", "nodev"}
	if m.ReadOnly {
		appOpts = append(appOpts, "ro")
	}
	s.Mounts = append(s.Mounts,
		rspec.Mount{Destination: CapsuleApp, Type: "bind", Source: app, Options: appOpts},
		rspec.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		rspec.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755"}})
	s.Mounts = append(s.Mounts, tori...)
	s.Mounts = append(s.Mounts,
		// Only sockets are bound in, read-only, from folders that hold nothing
		// else: the init's own socket and the supervisor's files stay on the
		// host side, where no service can replace or plant anything. A socket
		// on a read-only mount still connects.
		rspec.Mount{Destination: CapsuleNotifyDir, Type: "bind", Source: p.Paths.Notify, Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}},
		rspec.Mount{Destination: "/run/tori", Type: "bind", Source: p.Paths.State, Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}},
	)
	for _, so := range p.Sockets {
		if so.Network == specs.SocketUnix {
			s.Mounts = append(s.Mounts, rspec.Mount{Destination: so.Address, Type: "bind", Source: so.HostPath, Options: []string{"bind", "nosuid", "nodev", "noexec"}})
		}
	}
	for _, v := range p.Volumes {
		opts := []string{"rbind", "nosuid", "nodev"}
		if v.ReadOnly {
			opts = append(opts, rro)
		}
		s.Mounts = append(s.Mounts, rspec.Mount{Destination: v.Capsule, Type: "bind", Source: v.Host, Options: opts})
	}
	return s, nil
}

// initArgv is the capsule's process: the small init when there is one,
// else tori-run itself.
func initArgv(f Facts) []string {
	if f.Init != "" {
		return []string{CapsuleInit, InitArg}
	}
	return []string{CapsuleBinary, InitArg}
}

func namespaces(m *specs.Manifest, cgroupNS bool) []rspec.LinuxNamespace {
	ns := []rspec.LinuxNamespace{{Type: rspec.PIDNamespace}, {Type: rspec.MountNamespace}, {Type: rspec.IPCNamespace}, {Type: rspec.UTSNamespace}}
	if cgroupNS {
		ns = append(ns, rspec.LinuxNamespace{Type: rspec.CgroupNamespace})
	}
	if m.Network == specs.NetworkNone {
		ns = append(ns, rspec.LinuxNamespace{Type: rspec.NetworkNamespace})
	}
	return ns
}

// The OCI defaults, as runc's `runc spec` writes them.
func defaultMounts() []rspec.Mount {
	return []rspec.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
}

var maskedPaths = []string{
	"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
	"/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
}

// /sys/fs/cgroup: on cgroup v1 libcontainer mounts a tmpfs there for the
// hierarchies (each read-only), and leaves the tmpfs itself writable.
var readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", "/sys/fs/cgroup"}
