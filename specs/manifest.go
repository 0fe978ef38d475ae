package specs

import (
	"time"
)

// Defaults applied to every service that does not set the field.
const (
	DefaultRestart       = RestartOnFailure
	DefaultBackoffInit   = 100 * time.Millisecond
	DefaultBackoffMax    = 30 * time.Second
	DefaultResetAfter    = 60 * time.Second
	DefaultMaxRestarts   = 5
	DefaultRestartWindow = 60 * time.Second
	DefaultStopTimeout   = 10 * time.Second
	DefaultMaxTokens     = 200
)

// RestartPolicy says when a service that ended is started again.
type RestartPolicy string

// The restart policies of SPEC §1.
const (
	RestartAlways    RestartPolicy = "always"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartNever     RestartPolicy = "never"
)

// Network is how a capsule sees the network.
type Network string

// The network modes: the host's network (default), or a private namespace
// with loopback only.
const (
	NetworkHost Network = "host"
	NetworkNone Network = "none"
)

// SeccompUnconfined turns the system call filter off (seccomp: unconfined).
const SeccompUnconfined = "unconfined"

// Capabilities are added to and dropped from the default set, as
// CAP_NAME (upper case, the kernel's names); Drop may hold "ALL".
type Capabilities struct {
	Add  []string `json:"add,omitempty"`
	Drop []string `json:"drop,omitempty"`
}

// LayerHost is the layer that binds the host's system folders read-only.
const LayerHost = "host"

// Manifest is a parsed and validated capsule.yml.
type Manifest struct {
	// Source is the file the manifest was read from, as given to Load.
	Source string `json:"-"`

	Name       string `json:"name"`
	Version    string `json:"version"`
	Entrypoint string `json:"entrypoint,omitempty"`
	// Services in the order the file lists them.
	Services     []Service    `json:"services"`
	Env          []EnvVar     `json:"env,omitempty"`
	Dependencies Dependencies `json:"dependencies"`
	Volumes      []Volume     `json:"volumes,omitempty"`
	Resources    Resources    `json:"resources"`
	// Layers lie under the app, top first: LayerHost or sha256 digests of
	// installed rootfs layers. Defaults to [host].
	Layers   []string `json:"layers"`
	ReadOnly bool     `json:"read_only,omitempty"`
	Network  Network  `json:"network"`
	// User runs every service as this user: a name, or uid[:gid].
	User string `json:"user,omitempty"`
	// Seccomp is the capsule's system call filter: "" for tori-run's
	// default profile, SeccompUnconfined for none, or the path inside the
	// app of a profile in moby's JSON format.
	Seccomp string `json:"seccomp,omitempty"`
	// Capabilities change the default capability set of the services.
	Capabilities Capabilities `json:"capabilities"`
	// Settings are tori-run's own settings read from Env.
	Settings Settings `json:"settings"`

	// Sockets are the listening sockets tori-run holds for the capsule.
	Sockets []Socket `json:"sockets,omitempty"`
	// Update is the blue-green policy of this release (DefaultUpdate
	// when the manifest has no update:).
	Update Update `json:"update"`
}

// Service returns the named service, or nil.
func (m *Manifest) Service(name string) *Service {
	for i := range m.Services {
		if m.Services[i].Name == name {
			return &m.Services[i]
		}
	}
	return nil
}

// EnvVar is one environment variable, kept in file order.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Dependencies are what the app needs from the host.
type Dependencies struct {
	// Python is the interpreter version the app is written for, "3.10".
	Python string `json:"python,omitempty"`
	// PipRequirements is a path inside the app to a pinned requirements file.
	PipRequirements string `json:"pip_requirements,omitempty"`
}

// Volume binds a host path into the capsule.
type Volume struct {
	Host     string `json:"host"`
	Capsule  string `json:"capsule"`
	ReadOnly bool   `json:"read_only"`
	// Line is where the volume is in the manifest, for messages.
	Line int `json:"-"`
}

// Service is one supervised process of a capsule.
type Service struct {
	Name string `json:"name"`
	// Command is the argv, split with shell-word rules (no shell runs it).
	Command       []string      `json:"command"`
	Env           []EnvVar      `json:"env,omitempty"`
	Restart       RestartPolicy `json:"restart"`
	Backoff       Backoff       `json:"backoff"`
	MaxRestarts   int           `json:"max_restarts"`
	RestartWindow time.Duration `json:"restart_window"`
	StopSignal    Signal        `json:"stop_signal"`
	StopTimeout   time.Duration `json:"stop_timeout"`
	After         []string      `json:"after,omitempty"`
	Ready         *Probe        `json:"ready,omitempty"`
	Health        *Probe        `json:"health,omitempty"`
	Resources     Resources     `json:"resources"`
}

// Backoff is the restart delay schedule: Initial doubling up to Max, with
// jitter; it resets once a run lasted ResetAfter.
type Backoff struct {
	Initial    time.Duration `json:"initial"`
	Max        time.Duration `json:"max"`
	ResetAfter time.Duration `json:"reset_after"`
}

// Probe is a readiness or health check. Exactly one of Exec, HTTP, TCP and
// Notify is set.
type Probe struct {
	Exec      []string      `json:"exec,omitempty"`
	HTTP      string        `json:"http,omitempty"`
	TCP       string        `json:"tcp,omitempty"`
	Notify    bool          `json:"notify,omitempty"`
	Interval  time.Duration `json:"interval"`
	Timeout   time.Duration `json:"timeout"`
	Retries   int           `json:"retries"`
	OnFailure string        `json:"on_failure,omitempty"` // health only: "restart" or "ignore"
}

// Resources are cgroup limits in systemd's directive names. A nil field is
// not set.
type Resources struct {
	CPUQuota    *Percent `json:"CPUQuota,omitempty"`
	CPUWeight   *uint64  `json:"CPUWeight,omitempty"`
	MemoryMax   *Size    `json:"MemoryMax,omitempty"`
	MemoryHigh  *Size    `json:"MemoryHigh,omitempty"`
	IOWeight    *uint64  `json:"IOWeight,omitempty"`
	TasksMax    *Limit   `json:"TasksMax,omitempty"`
	AllowedCPUs *CPUSet  `json:"AllowedCPUs,omitempty"`
}

// Directives lists the directive names that are set, in the fixed order of
// the Resources fields.
func (r Resources) Directives() []string {
	var out []string
	add := func(set bool, name string) {
		if set {
			out = append(out, name)
		}
	}
	add(r.CPUQuota != nil, "CPUQuota")
	add(r.CPUWeight != nil, "CPUWeight")
	add(r.MemoryMax != nil, "MemoryMax")
	add(r.MemoryHigh != nil, "MemoryHigh")
	add(r.IOWeight != nil, "IOWeight")
	add(r.TasksMax != nil, "TasksMax")
	add(r.AllowedCPUs != nil, "AllowedCPUs")
	return out
}

// Override returns r with every directive that o sets replaced by o's value.
// A slice file given with --slice overrides the manifest's resources this
// way, directive by directive, as a systemd drop-in does.
func (r Resources) Override(o Resources) Resources {
	if o.CPUQuota != nil {
		r.CPUQuota = o.CPUQuota
	}
	if o.CPUWeight != nil {
		r.CPUWeight = o.CPUWeight
	}
	if o.MemoryMax != nil {
		r.MemoryMax = o.MemoryMax
	}
	if o.MemoryHigh != nil {
		r.MemoryHigh = o.MemoryHigh
	}
	if o.IOWeight != nil {
		r.IOWeight = o.IOWeight
	}
	if o.TasksMax != nil {
		r.TasksMax = o.TasksMax
	}
	if o.AllowedCPUs != nil {
		r.AllowedCPUs = o.AllowedCPUs
	}
	return r
}

// directiveSetters parse one directive's value into r; shared by the YAML
// manifest and the .slice parser so both accept exactly the same syntax.
var directiveSetters = map[string]func(r *Resources, v string) error{
	"CPUQuota": func(r *Resources, v string) error {
		p, err := ParsePercent(v)
		r.CPUQuota = &p
		return err
	},
	"CPUWeight": func(r *Resources, v string) error {
		w, err := ParseWeight(v)
		r.CPUWeight = &w
		return err
	},
	"MemoryMax": func(r *Resources, v string) error {
		s, err := ParseSize(v)
		r.MemoryMax = &s
		return err
	},
	"MemoryHigh": func(r *Resources, v string) error {
		s, err := ParseSize(v)
		r.MemoryHigh = &s
		return err
	},
	"IOWeight": func(r *Resources, v string) error {
		w, err := ParseWeight(v)
		r.IOWeight = &w
		return err
	},
	"TasksMax": func(r *Resources, v string) error {
		l, err := ParseLimit(v)
		r.TasksMax = &l
		return err
	},
	"AllowedCPUs": func(r *Resources, v string) error {
		c, err := ParseCPUSet(v)
		r.AllowedCPUs = &c
		return err
	},
}

// DirectiveNames is every resource directive tori-run knows, in order.
var DirectiveNames = []string{"CPUQuota", "CPUWeight", "MemoryMax", "MemoryHigh", "IOWeight", "TasksMax", "AllowedCPUs"}
