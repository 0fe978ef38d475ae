// Package layout names every path tori-run keeps on the host: under its
// root (--root, TORI_ROOT), its run folder (TORI_RUN_DIR, a tmpfs) and the
// state root (TORI_STATE_ROOT). Nothing else in tori-run joins a path under
// these three; a folder that moves, moves here.
//
// The paths are Linux paths, joined with package path (slashes) so that
// `tori-run spec` off Linux prints them as a Linux host has them. The
// package does no I/O: it names, it never creates.
//
//	<root>/releases/<sha256>/      installed releases (runtime/release)
//	<root>/refs/<capsule>/current  the enabled release; previous: rollback's target
//	<root>/upgrades/<capsule>.json an upgrade in progress
//	<root>/instances/<id>/         one running capsule (Instance)
//	<root>/logs/<capsule>/         the services' logs
//	<rundir>/containers/<id>/      libcontainer's state (its "root")
//	<rundir>/cgroup-probe.json     cached cgroup probes
//	<rundir>/sockets/<capsule>/    the capsule's unix listening sockets
//	<rundir>/init/<sha256>         the small capsule init, installed from tori-run
//	<rundir>/tori.sock             the daemon's control socket
//	<stateroot>/<capsule>/         a capsule's state store, which outlives releases
package layout

import "path"

// Defaults (SPEC §3). A user who is not root points them at folders of
// their own with --root / TORI_ROOT, TORI_RUN_DIR and TORI_STATE_ROOT.
const (
	DefaultRoot      = "/opt/tori"
	DefaultStateRoot = "/opt/tori/state"
	DefaultRunDir    = "/run/tori"
)

// Layout is the three roots tori-run keeps its files under.
type Layout struct {
	Root      string // releases, refs, upgrades, instances, logs
	RunDir    string // libcontainer's state, probe cache, sockets (tmpfs)
	StateRoot string // each capsule's state store
}

// New is a Layout; an empty root takes its default.
func New(root, runDir, stateRoot string) Layout {
	return Layout{Root: or(root, DefaultRoot), RunDir: or(runDir, DefaultRunDir), StateRoot: or(stateRoot, DefaultStateRoot)}
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Releases holds the installed releases, one folder per digest.
func (l Layout) Releases() string { return path.Join(l.Root, "releases") }

// Refs holds each capsule's references (current, previous).
func (l Layout) Refs() string { return path.Join(l.Root, "refs") }

// Ref is one reference of a capsule: which is "current" or "previous".
func (l Layout) Ref(capsule, which string) string { return path.Join(l.Root, "refs", capsule, which) }

// CurrentRefs matches every capsule's current reference (a glob).
func (l Layout) CurrentRefs() string { return path.Join(l.Root, "refs", "*", "current") }

// Upgrades holds the records of upgrades in progress.
func (l Layout) Upgrades() string { return path.Join(l.Root, "upgrades") }

// Upgrade is the record of capsule's upgrade in progress.
func (l Layout) Upgrade(capsule string) string {
	return path.Join(l.Root, "upgrades", capsule+".json")
}

// Instances holds one folder per instance.
func (l Layout) Instances() string { return path.Join(l.Root, "instances") }

// InstanceGlob matches the folders of capsule's instances ("" every
// capsule's).
func (l Layout) InstanceGlob(capsule string) string {
	if capsule == "" {
		return path.Join(l.Root, "instances", "*")
	}
	return path.Join(l.Root, "instances", capsule+"-*")
}

// ProtectedDirs are the folders of the root no capsule may bind.
func (l Layout) ProtectedDirs() []string {
	return []string{l.Releases(), l.Instances(), path.Join(l.Root, "logs"), l.Refs()}
}

// Logs is where a capsule's service logs live.
func (l Layout) Logs(capsule string) string { return path.Join(l.Root, "logs", capsule) }

// ContainerRoot is libcontainer's root (its state folders, on tmpfs).
func (l Layout) ContainerRoot() string { return path.Join(l.RunDir, "containers") }

// ProbeCache keeps cgroups' probes across runs (runtime/probecache.go).
func (l Layout) ProbeCache() string { return path.Join(l.RunDir, "cgroup-probe.json") }

// Socket is where a capsule's unix listening socket lives on the host.
func (l Layout) Socket(capsule, name string) string {
	return path.Join(l.RunDir, "sockets", capsule, name+".sock")
}

// Inits holds the small capsule inits tori-run installed, by digest
// (runtime/initbin).
func (l Layout) Inits() string { return path.Join(l.RunDir, "init") }

// ControlSocket is the daemon's control socket.
func (l Layout) ControlSocket() string { return path.Join(l.RunDir, "tori.sock") }

// CapsuleState is where a capsule's state lives.
func (l Layout) CapsuleState(capsule string) string { return path.Join(l.StateRoot, capsule) }

// Instance is one instance's folder, <root>/instances/<id>/:
//
//	instance.json  the record: what was created, for cleanup after a crash
//	lock           flock held by the tori-run that owns the instance
//	release        the release digest in use (gc keeps it)
//	rootfs/        the capsule's / (host layer: empty but for symlinks and
//	               mount points; libcontainer mounts inside its namespace)
//	app/           the overlay of the release's app under the scratch layer
//	scratch/       upper and work of that overlay (and of the rootfs
//	               layers' overlay), discarded at stop
//	run/           host side only, never bound into the capsule: the init's
//	               socket, its log, the supervisor's state files
//	notify/        only the services' sd_notify sockets, bound read-only at
//	               /.tori/notify
//	state/         only the state proxy's socket, bound read-only at /run/tori
//	admin/         the state proxy's admin socket (root only), for tori-run state
type Instance struct {
	ID, Dir, Record, Lock, Release       string
	Rootfs, App, Upper, Work             string
	RootUpper, RootWork                  string
	Run, InitSocket, InitLog, Supervisor string
	Notify, State, StateSocket           string
	Admin, AdminSocket                   string
}

// Instance names the files of instance id.
func (l Layout) Instance(id string) Instance { return InstanceAt(path.Join(l.Root, "instances", id)) }

// InstanceAt names the files of the instance in folder dir.
func InstanceAt(dir string) Instance {
	j := func(p ...string) string { return path.Join(append([]string{dir}, p...)...) }
	return Instance{
		ID: path.Base(dir), Dir: dir, Record: j("instance.json"), Lock: j("lock"), Release: j("release"),
		Rootfs: j("rootfs"), App: j("app"), Upper: j("scratch", "upper"), Work: j("scratch", "work"),
		RootUpper: j("scratch", "root-upper"), RootWork: j("scratch", "root-work"),
		Run: j("run"), InitSocket: j("run", "init.sock"), InitLog: j("run", "init.log"), Supervisor: j("run", "supervisor"),
		Notify: j("notify"), State: j("state"), StateSocket: j("state", "state.sock"),
		Admin: j("admin"), AdminSocket: j("admin", "state.sock"),
	}
}

// Dirs are the instance's folders, parents first: what Create makes.
func (i Instance) Dirs() []string {
	return []string{i.Dir, i.Rootfs, i.App, i.Upper, i.Work, i.Run, i.State, i.Notify, i.Admin, i.RootUpper, i.RootWork}
}
