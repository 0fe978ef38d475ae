//go:build linux

package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tori-run/tori-run/cgroups"

	"github.com/tori-run/tori-run/specs"
)

// Paths inside a capsule.
const (
	capsuleApp     = "/app"
	capsuleToriDir = "/.tori"
	capsuleBinary  = "/.tori/tori-run"
	// capsuleNotifyDir holds the services' NOTIFY_SOCKETs, bound read-only:
	// connect() works on a read-only mount, replacing or planting does not.
	capsuleNotifyDir = "/.tori/notify"
	capsulePath      = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// hostSystemDirs are bound read-only into a capsule on the host layer; the
// host's /etc is not among them: only hostEtc of it is.
var hostSystemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// specInput is what the OCI spec of a capsule instance is made from.
type specInput struct {
	Manifest    *specs.Manifest
	ID          string // instance id, also the container id
	Rootfs      string // host folder that becomes /
	App         string // host folder mounted at /app (the instance's overlay)
	NotifyDir   string // host folder bound read-only at /.tori/notify (sd_notify sockets)
	StateDir    string // host folder bound read-only at /run/tori (the state proxy's socket)
	Binary      string // tori-run's own binary, bound at /.tori/tori-run ("": not bound)
	Init        string // the small capsule init (cmd/tori-init), bound at /.tori/init ("": Binary is the init)
	CgroupsPath string
	CgroupNS    bool // a cgroup namespace (cgroup v2 hosts)
	Env         []string
	// AppSource is the release's app folder (the overlay's lower), where a
	// seccomp profile the manifest names is read.
	AppSource string
	// Volumes are the manifest's volumes as checked (host paths resolved);
	// nil: the manifest's own.
	Volumes []specs.Volume
	// SocketMounts bind unix listening sockets: host path, capsule path.
	SocketMounts [][2]string
}

// buildSpec converts a manifest to the OCI runtime-spec config tori-run runs
// the instance with. The container's process is tori-run's own init; the
// services are started by it later, so the spec's process is not a service.
func buildSpec(in specInput) (*rspec.Spec, error) {
	m := in.Manifest
	noNewPrivs := true
	caps, err := capsuleCaps(m)
	if err != nil {
		return nil, err
	}
	s := &rspec.Spec{
		Version:  rspec.Version,
		Hostname: m.Name,
		Root:     &rspec.Root{Path: in.Rootfs, Readonly: true},
		Process: &rspec.Process{
			Args:            initArgv(in),
			Env:             in.Env,
			Cwd:             "/",
			User:            rspec.User{UID: 0, GID: 0},
			NoNewPrivileges: noNewPrivs,
			Capabilities: &rspec.LinuxCapabilities{
				Bounding:  caps,
				Effective: caps,
				Permitted: caps,
			},
		},
		Mounts: defaultMounts(),
		Linux: &rspec.Linux{
			CgroupsPath:   in.CgroupsPath,
			Namespaces:    namespaces(m, in.CgroupNS),
			MaskedPaths:   maskedPaths,
			ReadonlyPaths: readonlyPaths,
		},
	}
	if s.Linux.Seccomp, err = capsuleSeccomp(m, in.AppSource, caps, in.CgroupNS); err != nil {
		return nil, err
	}
	base, err := baseMounts(m)
	if err != nil {
		return nil, err
	}
	s.Mounts = append(s.Mounts, base...)
	appOpts := []string{"bind", "nosuid", "nodev"}
	if m.ReadOnly {
		appOpts = append(appOpts, "ro")
	}
	s.Mounts = append(s.Mounts,
		rspec.Mount{Destination: capsuleApp, Type: "bind", Source: in.App, Options: appOpts},
		rspec.Mount{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		rspec.Mount{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=755"}},
		// Only sockets are bound in, read-only, from folders that hold nothing
		// else: the init's own socket and the supervisor's files stay on the
		// host side, where no service can replace or plant anything. A socket
		// on a read-only mount still connects.
		rspec.Mount{Destination: capsuleNotifyDir, Type: "bind", Source: in.NotifyDir, Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}},
		rspec.Mount{Destination: filepath.Dir(capsuleStateSocket), Type: "bind", Source: in.StateDir, Options: []string{"bind", "ro", "nosuid", "nodev", "noexec"}},
	)
	// The init (and tori-run, when it is the init or the caller binds it for
	// its workloads), read-only: the capsule can run it, never replace it.
	if in.Init != "" {
		s.Mounts = append(s.Mounts, rspec.Mount{Destination: capsuleInit, Type: "bind", Source: in.Init, Options: []string{"bind", "ro", "nosuid", "nodev"}})
	}
	if in.Binary != "" {
		s.Mounts = append(s.Mounts, rspec.Mount{Destination: capsuleBinary, Type: "bind", Source: in.Binary, Options: []string{"bind", "ro", "nosuid", "nodev"}})
	}
	for _, sm := range in.SocketMounts {
		s.Mounts = append(s.Mounts, rspec.Mount{Destination: sm[1], Type: "bind", Source: sm[0], Options: []string{"bind", "nosuid", "nodev", "noexec"}})
	}
	vols := in.Volumes
	if vols == nil {
		vols = m.Volumes
	}
	for _, v := range vols {
		opts := []string{"rbind", "nosuid", "nodev"}
		if v.ReadOnly {
			opts = append(opts, roRecursive())
		}
		s.Mounts = append(s.Mounts, rspec.Mount{Destination: v.Capsule, Type: "bind", Source: v.Host, Options: opts})
	}
	return s, nil
}

// baseMounts are the layers under the app. The host layer binds the host's
// system folders read-only; a folder that is a symlink on the host (merged
// /usr: /bin -> usr/bin) is recreated as the same symlink by prepareRootfs.
func baseMounts(m *specs.Manifest) ([]rspec.Mount, error) {
	if len(m.Layers) != 1 || m.Layers[0] != specs.LayerHost {
		return nil, nil // rootfs layers: the root itself is their overlay
	}
	var out []rspec.Mount
	for _, d := range hostSystemDirs {
		fi, err := os.Lstat(d)
		if err != nil || fi.Mode()&os.ModeSymlink != 0 || !fi.IsDir() {
			continue
		}
		out = append(out, rspec.Mount{Destination: d, Type: "bind", Source: d, Options: []string{"rbind", roRecursive(), "nosuid", "nodev"}})
	}
	return append(out, etcMounts()...), nil
}

// prepareRootfs makes the empty root folder's symlinks for the host layer
// (merged-/usr hosts link /bin, /sbin, /lib* into /usr).
func prepareRootfs(rootfs string, m *specs.Manifest) error {
	if len(m.Layers) != 1 || m.Layers[0] != specs.LayerHost {
		return nil
	}
	for _, d := range hostSystemDirs {
		fi, err := os.Lstat(d)
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			continue
		}
		target, err := os.Readlink(d)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, filepath.Join(rootfs, d)); err != nil && !os.IsExist(err) {
			return fmt.Errorf("preparing the capsule root: %w", err)
		}
	}
	return prepareEtc(rootfs)
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

// serviceEnv is the environment a service sees (SPEC §3): tori-run's
// variables, then the manifest's env, then the service's own.
func serviceEnv(m *specs.Manifest, s *specs.Service, release, buildSHA string) []string {
	env := map[string]string{"PATH": capsulePath, "HOME": "/root"}
	for _, e := range m.Env {
		env[e.Name] = e.Value
	}
	for _, e := range s.Env {
		env[e.Name] = e.Value
	}
	env["TORI_CAPSULE"] = m.Name
	env["TORI_RELEASE"] = release
	env["TORI_BUILD_SHA"] = ShowBuildSHA(buildSHA) // "none" when the release records none, never ""
	env["TORI_SERVICE"] = s.Name
	env["TORI_STATE_SOCKET"] = capsuleStateSocket
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// SpecFor returns the OCI runtime-spec a run of ref would use. Paths that a
// run creates per instance name a placeholder instance, <name>-<id>.
func SpecFor(ref string, o Options) (*rspec.Spec, error) {
	t, err := Resolve(ref, o)
	if err != nil {
		return nil, err
	}
	// Where Create would bind the init from, without installing it.
	if err := resolveInit(&o, o.Log, false); err != nil {
		return nil, err
	}
	id := t.Manifest.Name + "-<id>"
	p := newInstancePaths(o.Root, id)
	unified := false
	if h, err := cgroups.Detect(); err == nil {
		unified = h.Mode == cgroups.Unified
	}
	return buildSpec(specInput{Manifest: t.Manifest, ID: id, Rootfs: p.Rootfs, App: p.App, NotifyDir: p.Notify, StateDir: p.State, Binary: o.Binary, Init: o.InitBinary,
		CgroupsPath: filepath.Join("tori", id), CgroupNS: unified, Env: []string{"PATH=" + capsulePath}, AppSource: t.AppDir})
}
