//go:build linux

package runtime

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/gofrs/flock"
	"github.com/opencontainers/runc/libcontainer"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime/capinit"
	"github.com/tori-run/tori-run/runtime/hostfacts"
	"github.com/tori-run/tori-run/specs"
	"github.com/tori-run/tori-run/supervisor"
)

// AdoptedService is a service that kept running while no tori-run watched
// it, now tracked again: its process by a new pidfd, its output through the
// read ends of its pipes that the capsule's init kept.
type AdoptedService struct {
	*Service
	Stdout, Stderr *os.File
}

// Process is the service as a supervisor tracks it (supervisor.Adopt).
func (a AdoptedService) Process() supervisor.Process { return serviceProcess{a.Service} }

// FindAdoptable returns the folder of an instance of capsule that a daemon
// made and whose tori-run is gone (its lock is free), or "".
func FindAdoptable(root, capsule string) string {
	dirs, _ := filepath.Glob(layout.Layout{Root: root}.InstanceGlob(capsule))
	for _, dir := range dirs {
		rec, err := readRecord(dir)
		if err != nil || rec.Capsule != capsule || rec.Owner != OwnerDaemon {
			continue
		}
		l := flock.New(layout.InstanceAt(dir).Lock)
		if ok, err := l.TryLock(); err == nil && ok {
			_ = l.Unlock()
			return dir
		}
	}
	return ""
}

// Adopt takes over an instance whose tori-run is gone: it takes the lock,
// finds the container and cgroups the record names, and asks the capsule's
// init for every service that still runs. On error nothing is changed, and
// the caller may sweep the instance instead.
func Adopt(ctx context.Context, dir string, o Options) (_ *Instance, _ []AdoptedService, err error) {
	rec, err := readRecord(dir)
	if err != nil {
		return nil, nil, err
	}
	store, err := release.Open(o.Root)
	if err != nil {
		return nil, nil, err
	}
	rel, err := store.Resolve(rec.Release)
	if err != nil {
		return nil, nil, err
	}
	m, err := specs.Load(filepath.Join(rel.Path, "capsule.yml"))
	if err != nil {
		return nil, nil, err
	}
	// Restarts run the same interpreter a fresh start would (the .py rule).
	layers, err := resolveLayers(m, o)
	if err != nil {
		return nil, nil, err
	}
	if err := hostfacts.PreparePython(m, layers, CapsuleLogger(o.Log, m.Name, rec.Release, rec.BuildSHA)); err != nil {
		return nil, nil, err
	}
	i := &Instance{ID: rec.ID, Manifest: m, Release: rec.Release, BuildSHA: rec.BuildSHA,
		paths: o.layout().Instance(rec.ID), opts: o, services: map[string]*cgroups.Group{}}
	i.Log = CapsuleLogger(o.Log, m.Name, rec.Release, rec.BuildSHA).With().Str("instance", rec.ID).Logger()
	var c confinement
	if c.uid, c.gid, err = resolveUser(m, layers); err != nil {
		return nil, nil, err
	}
	i.lock = flock.New(i.paths.Lock)
	if ok, err := i.lock.TryLock(); err != nil || !ok {
		return nil, nil, fmt.Errorf("instance %s: another tori-run holds it", rec.ID)
	}
	defer func() {
		if err != nil {
			_ = i.lock.Unlock()
		}
	}()
	if i.host, err = cgroups.Detect(); err != nil {
		return nil, nil, err
	}
	if err := cgroups.EnsureDelegation(i.host); err != nil {
		return nil, nil, err
	}
	facts, err := hostFacts(i.host, o.Binary, o.InitBinary)
	if err != nil {
		return nil, nil, err
	}
	t := &Target{Manifest: m, AppDir: filepath.Join(rel.Path, "app"), Layers: layers, Release: rec.Release, BuildSHA: rec.BuildSHA}
	if i.plan, err = compilePlan(t, o, rec.ID, facts, c, ""); err != nil {
		return nil, nil, err
	}
	if i.group, err = cgroups.Load(i.host, rec.CgroupPath); err != nil {
		return nil, nil, err
	}
	if i.container, err = libcontainer.Load(rec.ContainerRoot, rec.ID); err != nil {
		return nil, nil, fmt.Errorf("container %s: %w", rec.ID, err)
	}
	if st, err := i.container.Status(); err != nil || st != libcontainer.Running {
		return nil, nil, fmt.Errorf("container %s is not running (%v, %v)", rec.ID, st, err)
	}
	// The state's proxy died with the previous tori-run; serve it anew.
	if err := i.startState(); err != nil {
		return nil, nil, err
	}
	adopted, err := i.adoptServices(ctx)
	if err != nil {
		_ = i.stopState(ctx)
		return nil, nil, err
	}
	if err := i.createServiceCgroups(); err != nil { // those of services not running (cgroup.go)
		_ = i.stopState(ctx)
		return nil, nil, err
	}
	if err := i.adoptSockets(); err != nil {
		_ = i.stopState(ctx)
		return nil, nil, err
	}
	i.Log.Info().Int("services", len(adopted)).Msg("adopted a running capsule")
	return i, adopted, nil
}

// adoptServices asks the init for its live services over one connection,
// which then carries their exits.
func (i *Instance) adoptServices(ctx context.Context) ([]AdoptedService, error) {
	procs, held, names, conn, err := capinit.Adopt(ctx, i.paths.InitSocket, initAnswerTimeout)
	if err != nil {
		return nil, err
	}
	byPid := map[int]*Service{}
	var out []AdoptedService
	for k, p := range procs {
		g, err := i.serviceGroup(p.Service)
		if err != nil {
			conn.Close()
			closeFiles(held)
			for _, q := range procs[k:] {
				closeFiles([]*os.File{q.Pidfd, q.Stdout, q.Stderr})
			}
			for _, a := range out {
				closeFiles([]*os.File{a.pidfd, a.Stdout, a.Stderr})
			}
			return nil, err
		}
		oom, _ := g.OOMKills()
		svc := &Service{Name: p.Service, Pid: p.Pid, HostPid: pidfdPid(p.Pidfd), Group: g, pidfd: p.Pidfd, oomBase: oom, done: make(chan struct{})}
		byPid[p.Pid] = svc
		out = append(out, AdoptedService{Service: svc, Stdout: p.Stdout, Stderr: p.Stderr})
	}
	i.heldFiles, i.heldNames = held, names // the capsule's listening sockets
	go dispatchExits(conn, byPid)
	return out, nil
}

// dispatchExits delivers the exits the init reports on an adopt
// connection; if the connection breaks, every service still open is lost.
func dispatchExits(conn *net.UnixConn, byPid map[int]*Service) {
	defer conn.Close()
	for {
		ex, err := capinit.WaitExit(conn)
		if err != nil {
			for _, s := range byPid {
				s.ended(supervisor.Exit{Code: -1, Err: "lost the capsule's init: " + err.Error()})
			}
			return
		}
		if s := byPid[ex.Pid]; s != nil {
			delete(byPid, ex.Pid)
			s.ended(exitInfo(ex))
		}
	}
}
