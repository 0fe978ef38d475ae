// Package plan compiles a capsule's manifest, once, into everything an
// instance of it needs: the OCI runtime-spec config its container runs
// with, the capsule's cgroup and limits, and per service its argv,
// environment, user, cgroup, limits, sockets and supervision. It is a pure
// function of the manifest, the host's facts (Facts: probed on Linux by
// the runtime, or assumed) and the instance's options: no file is read,
// nothing is probed, and it builds for every GOOS, so `tori-run spec`
// prints the same config.json on Windows and macOS as on Linux from the
// same facts.
//
// The runtime compiles a plan in Create and then only reads it: its
// cgroups are made from Plan.Cgroup and each Service.Cgroup, the container
// from Plan.Spec, and each service start looks the service up by name in
// the plan (Plan.Service), never in the manifest.
//
// Do not use it to decide anything at run time (restart decisions are the
// supervisor's); it says what to make, not when.
package plan

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	rspec "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/specs"
)

// Paths inside a capsule.
const (
	CapsuleApp     = "/app"
	CapsuleToriDir = "/.tori"
	CapsuleBinary  = "/.tori/tori-run"
	// CapsuleInit is where a small capsule init is bound (Facts.Init).
	CapsuleInit = "/.tori/init"
	// CapsuleNotifyDir holds the services' NOTIFY_SOCKETs, bound read-only:
	// connect() works on a read-only mount, replacing or planting does not.
	CapsuleNotifyDir = "/.tori/notify"
	// CapsuleStateSocket is the state proxy's socket (TORI_STATE_SOCKET).
	CapsuleStateSocket = "/run/tori/state.sock"
	// CapsulePath is the services' PATH.
	CapsulePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// InitArg is the argument that makes tori-run the capsule's init
	// (runtime.InitCommand; a test keeps them equal).
	InitArg = "capsule-init"
)

// Input is what a plan is compiled from, besides the host's Facts.
type Input struct {
	Manifest *specs.Manifest
	// ID is the instance's id (also the container's): <name>-<hex>.
	ID       string
	Release  string
	BuildSHA string
	// Layout names the instance's folders on the host.
	Layout layout.Layout
	// CgroupParent is the cgroup the capsule's goes under ("": tori).
	CgroupParent string
	// Slice overrides the manifest's resources (a systemd .slice's, parsed
	// by the caller: specs.LoadSlice); nil: none.
	Slice *specs.Resources
	// Volumes are the manifest's volumes as the host checked and resolved
	// them against the operator's allow-list (runtime/volumes.go); nil: the
	// manifest's own.
	Volumes []specs.Volume
	// UID and GID the services run as (the manifest's user: resolved).
	UID, GID uint32
	// Python is the interpreter the capsule's .py commands run with, as
	// the capsule sees it (runtime/python.go finds it); "": commands as
	// they are.
	Python string
	// SeccompProfile is the body of the profile the manifest's seccomp:
	// names, read from the app; unused otherwise.
	SeccompProfile []byte
	// App is the host folder bound at /app; "": the instance's overlay of
	// the app (Paths.App).
	App string
	// StateLimits are the operator's bounds on the capsule's state (the
	// host configuration's state: section under the flags).
	StateLimits StateLimits
}

// StateLimits are the operator's bounds on one capsule's state (0: none).
type StateLimits struct {
	Quota               int64
	EventRetentionCount int
	EventRetentionAge   time.Duration
	MaxTokensCeiling    int // 0: the proxy's default ceiling
}

// State is the capsule's state store as the instance opens and serves it.
type State struct {
	Dir        string // <state root>/<capsule>, which outlives releases
	Buffer     int    // settings.state_buffer
	RatePerMin int    // settings: MAX_TOKENS_PER_MIN, under Limits.MaxTokensCeiling
	Limits     StateLimits
}

// Plan is everything an instance of a capsule needs, compiled once.
type Plan struct {
	Capsule  string
	Release  string
	BuildSHA string
	ID       string
	// Paths are the instance's folders and files on the host.
	Paths layout.Instance
	// Spec is the container's OCI config; its process is tori-run's init.
	Spec *rspec.Spec
	// Cgroup is the capsule's cgroup, relative to tori-run's own
	// (tori/<id>, or <parent>/<id>); Resources its limits, the slice's
	// applied over the manifest's.
	Cgroup    string
	Resources specs.Resources
	// Services in manifest order.
	Services []Service
	// Sockets are the capsule's listening sockets, in manifest order.
	Sockets []Socket
	// Volumes are what is bound, host paths resolved.
	Volumes []specs.Volume
	// State is the capsule's state store.
	State State
	// UID and GID every service runs as.
	UID, GID uint32
	// Capabilities of every process in the capsule.
	Capabilities []string
	// HostLayer: the capsule's root is an empty folder with the host's
	// system folders bound in (layers: [host]); else rootfs layers' overlay.
	HostLayer bool
	// NetworkNone: the capsule has a network namespace of its own
	// (loopback only), which probes from the host cannot reach.
	NetworkNone bool
	// RootLinks are the symlinks to make in the capsule's empty root on
	// the host layer (merged /usr), EtcLinks those in its /etc; nil with
	// rootfs layers.
	RootLinks []HostEntry
	EtcLinks  []HostEntry
	// Facts the plan was compiled from.
	Facts Facts
}

// Service is one service as the instance starts and supervises it.
type Service struct {
	Name string
	// Argv and Env as the init executes them (the .py rule applied; Env
	// sorted, without NOTIFY_SOCKET and LISTEN_*, which a start adds).
	Argv []string
	Env  []string
	Dir  string
	UID  uint32
	GID  uint32
	// Cgroup is the service's cgroup under the capsule's (svc-<name>).
	Cgroup    string
	Resources specs.Resources
	// Sockets names the capsule's sockets the service receives, in order.
	Sockets     []string
	Supervision Supervision
}

// Supervision is what the supervisor needs of a service (the runtime
// hands it over as supervisor.ServiceConfig, field by field).
type Supervision struct {
	Restart       string
	Backoff       specs.Backoff
	MaxRestarts   int
	RestartWindow time.Duration
	StopSignal    syscall.Signal
	StopTimeout   time.Duration
	After         []string
	Ready         *Probe
	Health        *Probe
}

// Probe is a readiness or health check: Kind one of exec, http, tcp,
// notify.
type Probe struct {
	Kind      string
	Exec      []string
	URL       string
	Addr      string
	Interval  time.Duration
	Timeout   time.Duration
	Retries   int
	OnFailure string
}

// Socket is one listening socket and, for unix, where it is on the host.
type Socket struct {
	specs.Socket
	HostPath string // unix only
}

// StateOf is the state part of a plan (container mode, where no plan is
// compiled, uses it alone).
func StateOf(m *specs.Manifest, l layout.Layout, lim StateLimits) State {
	return State{Dir: l.CapsuleState(m.Name), Buffer: m.Settings.StateBuffer, RatePerMin: m.Settings.MaxTokensPerMin, Limits: lim}
}

// Service returns the named service, or nil.
func (p *Plan) Service(name string) *Service {
	for i := range p.Services {
		if p.Services[i].Name == name {
			return &p.Services[i]
		}
	}
	return nil
}

// ServiceCgroup is the name of a service's cgroup under the capsule's.
func ServiceCgroup(service string) string { return "svc-" + service }

// CgroupPath is the capsule's cgroup for instance id under parent ("":
// tori).
func CgroupPath(parent, id string) string {
	if parent == "" {
		parent = "tori"
	}
	return path.Join(parent, id)
}

// Compile makes the plan of one instance.
func Compile(in Input, f Facts) (*Plan, error) {
	m := in.Manifest
	if m == nil {
		return nil, fmt.Errorf("plan: no manifest")
	}
	p := &Plan{Capsule: m.Name, Release: in.Release, BuildSHA: in.BuildSHA, ID: in.ID,
		Paths: in.Layout.Instance(in.ID), Cgroup: CgroupPath(in.CgroupParent, in.ID), UID: in.UID, GID: in.GID, Facts: f}
	if f.Cgroup == CgroupNone {
		p.Cgroup = ""
	}
	p.State = StateOf(m, in.Layout, in.StateLimits)
	p.Resources = m.Resources
	if in.Slice != nil {
		p.Resources = p.Resources.Override(*in.Slice)
	}
	p.Volumes = in.Volumes
	if p.Volumes == nil {
		p.Volumes = m.Volumes
	}
	for _, s := range m.Sockets {
		ps := Socket{Socket: s}
		if s.Network == specs.SocketUnix {
			ps.HostPath = in.Layout.Socket(m.Name, s.Name)
		}
		p.Sockets = append(p.Sockets, ps)
	}
	p.Services = CompileServices(in, p.Sockets)
	p.HostLayer, p.NetworkNone = hostLayer(m), m.Network == specs.NetworkNone
	if p.HostLayer {
		for _, d := range f.HostDirs {
			if d.Link != "" {
				p.RootLinks = append(p.RootLinks, d)
			}
		}
		for _, e := range f.Etc {
			if e.Link != "" {
				p.EtcLinks = append(p.EtcLinks, e)
			}
		}
	}
	var err error
	if p.Capabilities, err = Capabilities(m, f); err != nil {
		return nil, err
	}
	if p.Spec, err = buildSpec(p, in, f); err != nil {
		return nil, err
	}
	return p, nil
}

func hostLayer(m *specs.Manifest) bool { return len(m.Layers) == 1 && m.Layers[0] == specs.LayerHost }

// CompileServices is the services' part of a plan, which needs no facts
// (container mode, where an engine made the container, uses only it).
func CompileServices(in Input, socks []Socket) []Service {
	out := make([]Service, len(in.Manifest.Services))
	for k := range in.Manifest.Services {
		out[k] = compileService(in.Manifest, &in.Manifest.Services[k], in, socks)
	}
	return out
}

func compileService(m *specs.Manifest, s *specs.Service, in Input, socks []Socket) Service {
	argv := slices.Clone(s.Command)
	if in.Python != "" && len(argv) > 0 && specs.IsPythonScript(argv[0]) {
		argv = append([]string{in.Python, strings.TrimPrefix(argv[0], "./")}, argv[1:]...)
	}
	out := Service{Name: s.Name, Argv: argv, Env: ServiceEnv(m, s, in.Release, in.BuildSHA), Dir: CapsuleApp,
		UID: in.UID, GID: in.GID, Cgroup: ServiceCgroup(s.Name), Resources: s.Resources,
		Supervision: Supervision{
			Restart: string(s.Restart), Backoff: s.Backoff, MaxRestarts: s.MaxRestarts, RestartWindow: s.RestartWindow,
			StopSignal: syscall.Signal(s.StopSignal.Num), StopTimeout: s.StopTimeout, After: s.After,
			Ready: probe(s.Ready), Health: probe(s.Health),
		}}
	for _, so := range socks {
		if so.For(s.Name) {
			out.Sockets = append(out.Sockets, so.Name)
		}
	}
	return out
}

func probe(p *specs.Probe) *Probe {
	if p == nil {
		return nil
	}
	out := &Probe{Interval: p.Interval, Timeout: p.Timeout, Retries: p.Retries, OnFailure: p.OnFailure}
	switch {
	case p.Notify:
		out.Kind = "notify"
	case len(p.Exec) > 0:
		out.Kind, out.Exec = "exec", p.Exec
	case p.HTTP != "":
		out.Kind, out.URL = "http", p.HTTP
	case p.TCP != "":
		out.Kind, out.Addr = "tcp", p.TCP
	}
	return out
}

// ServiceEnv is the environment a service sees (SPEC §3): tori-run's
// variables, then the manifest's env, then the service's own, sorted;
// tori-run's TORI_* win over both.
func ServiceEnv(m *specs.Manifest, s *specs.Service, release, buildSHA string) []string {
	env := map[string]string{"PATH": CapsulePath, "HOME": "/root"}
	for _, e := range m.Env {
		env[e.Name] = e.Value
	}
	for _, e := range s.Env {
		env[e.Name] = e.Value
	}
	env["TORI_CAPSULE"] = m.Name
	env["TORI_RELEASE"] = release
	env["TORI_BUILD_SHA"] = ShowBuildSHA(buildSHA)
	env["TORI_SERVICE"] = s.Name
	env["TORI_STATE_SOCKET"] = CapsuleStateSocket
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// BuildSHAAbsent is what logs, metrics, status and the environment show
// for a release that records no build SHA: never an empty string.
const BuildSHAAbsent = "none"

// ShowBuildSHA returns sha, or BuildSHAAbsent when there is none.
func ShowBuildSHA(sha string) string {
	if sha == "" {
		return BuildSHAAbsent
	}
	return sha
}
