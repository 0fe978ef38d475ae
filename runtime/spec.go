//go:build linux

package runtime

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/moby/sys/capability"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/runtime/plan"
	"github.com/tori-run/tori-run/specs"
)

// Paths inside a capsule (the plan's).
const (
	capsuleApp       = plan.CapsuleApp
	capsuleBinary    = plan.CapsuleBinary
	capsuleNotifyDir = plan.CapsuleNotifyDir
	capsulePath      = plan.CapsulePath
)

// hostFacts probes what the plan needs to know of this host. h is the
// host's cgroups (nil: none, a run without root and without delegation).
// binary and init are where tori-run and the small capsule init are
// (Options.Binary and InitBinary, after resolveInit).
func hostFacts(h *cgroups.Host, binary, init string) (plan.Facts, error) {
	f := plan.Facts{Cgroup: plan.CgroupNone, Binary: binary, Init: init, HostDirs: hostDirsOnce(), Etc: etcOnce()}
	if h != nil {
		switch h.Mode {
		case cgroups.Unified:
			f.Cgroup = plan.CgroupV2
		case cgroups.Hybrid:
			f.Cgroup = plan.CgroupHybrid
		default:
			f.Cgroup = plan.CgroupV1
		}
	}
	f.Kernel = kernelRelease()
	last, err := capability.LastCap()
	if err != nil {
		return f, fmt.Errorf("reading the kernel's capabilities: %w", err)
	}
	f.LastCap = int(last)
	return f, nil
}

// roRecursive is the recursive read-only bind option on this kernel
// (plan.RecursiveRO).
var roRecursive = sync.OnceValue(func() string { return plan.RecursiveRO(plan.Facts{Kernel: kernelRelease()}) })

// hostDirsOnce lists the host's system folders of plan.HostSystemDirs: a
// folder is bound, a symlink (merged /usr) made again in the capsule.
var hostDirsOnce = sync.OnceValue(func() []plan.HostEntry {
	var out []plan.HostEntry
	for _, d := range plan.HostSystemDirs {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			if target, err := os.Readlink(d); err == nil {
				out = append(out, plan.HostEntry{Name: d, Link: target})
			}
		case fi.IsDir():
			out = append(out, plan.HostEntry{Name: d})
		}
	}
	return out
})

// etcOnce lists the host's /etc entries the allow-list names, in its order.
var etcOnce = sync.OnceValue(func() []plan.HostEntry { return listEtc("/etc") })

func listEtc(dir string) []plan.HostEntry {
	var out []plan.HostEntry
	seen := map[string]bool{}
	for _, pat := range plan.EtcAllowList {
		matches, _ := filepath.Glob(filepath.Join(dir, pat))
		for _, p := range matches {
			name := filepath.Base(p)
			if seen[name] {
				continue
			}
			seen[name] = true
			fi, err := os.Lstat(p)
			if err != nil {
				continue
			}
			link := ""
			if fi.Mode()&os.ModeSymlink != 0 {
				if link, err = os.Readlink(p); err != nil {
					continue
				}
			}
			_, serr := os.Stat(p)
			if e, ok := plan.EtcEntry(name, link, serr == nil); ok {
				out = append(out, e)
			}
		}
	}
	return out
}

// compilePlan compiles the plan of instance id of t: what Create, the
// rootless start, adopt and spec share. c holds what Create checked and
// resolved first (volumes, user); app is the host folder bound at /app
// ("": the instance's overlay).
func compilePlan(t *Target, o Options, id string, f plan.Facts, c confinement, app string) (*plan.Plan, error) {
	m := t.Manifest
	in := plan.Input{Manifest: m, ID: id, Release: t.Release, BuildSHA: t.BuildSHA, Layout: o.layout(),
		CgroupParent: o.CgroupParent, Volumes: c.volumes, UID: c.uid, GID: c.gid, App: app, StateLimits: o.stateLimits()}
	if o.Slice != "" {
		over, err := specs.LoadSlice(o.Slice)
		if err != nil {
			return nil, err
		}
		in.Slice = &over
	}
	if m.Seccomp != "" && m.Seccomp != specs.SeccompUnconfined {
		file := filepath.Join(t.AppDir, filepath.FromSlash(m.Seccomp))
		body, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("%s: seccomp: cannot read the profile %s: %w", m.Source, m.Seccomp, err)
		}
		in.SeccompProfile = body
	}
	return plan.Compile(in, f)
}

// layout is where o keeps its files.
func (o *Options) layout() layout.Layout { return layout.New(o.Root, o.RunDir, o.StateRoot) }

// prepareRootfs makes what the plan says to make in the capsule's empty
// root on the host layer: the host's symlinked system folders (merged /usr)
// and /etc with the allow-list's symlinks (the rest of it is bound).
func prepareRootfs(p *plan.Plan) error {
	if !p.HostLayer {
		return nil
	}
	rootfs := p.Paths.Rootfs
	for _, d := range p.RootLinks {
		if err := os.Symlink(d.Link, filepath.Join(rootfs, d.Name)); err != nil && !os.IsExist(err) {
			return fmt.Errorf("preparing the capsule root: %w", err)
		}
	}
	etc := filepath.Join(rootfs, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return fmt.Errorf("preparing the capsule's /etc: %w", err)
	}
	for _, e := range p.EtcLinks {
		if err := os.Symlink(e.Link, filepath.Join(etc, e.Name)); err != nil && !os.IsExist(err) {
			return fmt.Errorf("preparing the capsule's /etc: %w", err)
		}
	}
	return nil
}

// serviceEnv is the environment a service sees (plan.ServiceEnv).
func serviceEnv(m *specs.Manifest, s *specs.Service, release, buildSHA string) []string {
	return plan.ServiceEnv(m, s, release, buildSHA)
}

// SpecFor returns the OCI runtime-spec a run of ref would use on this host
// (assume: from plan.AssumedFacts instead, as off Linux, whose names and
// values it returns). Paths that a run creates per instance name a
// placeholder instance, <name>-<id>.
func SpecFor(ref string, o Options, assume bool) (*rspec.Spec, []string, error) {
	t, err := Resolve(ref, o)
	if err != nil {
		return nil, nil, err
	}
	f := plan.AssumedFacts()
	if !assume {
		// Where Create would bind the init from, without installing it.
		if err := resolveInit(&o, o.Log, false); err != nil {
			return nil, nil, err
		}
		h, _ := cgroups.Detect()
		if f, err = hostFacts(h, o.Binary, o.InitBinary); err != nil {
			return nil, nil, err
		}
		if h == nil {
			f.Cgroup = plan.CgroupV1 // no cgroup namespace when no cgroups are found
		}
	}
	p, err := compilePlan(t, o, t.Manifest.Name+"-<id>", f, confinement{}, "")
	if err != nil {
		return nil, nil, err
	}
	return p.Spec, f.Stated(), nil
}

// kernelRelease is the running kernel's release (uname -r).
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown (uname: " + err.Error() + ")"
	}
	return unix.ByteSliceToString(u.Release[:])
}
