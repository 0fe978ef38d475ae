package toritest

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/runtime/harness"
)

// An Option changes how Start runs a capsule.
type Option func(*config)

type config struct {
	timeout time.Duration
	root    string
	env     []string
	volumes []harness.Volume
	allow   []string
	limits  []string
	slice   string
	log     *zerolog.Logger
}

// WithEnv sets an environment variable of every service, over the
// manifest's env (a service's own env still wins, as in a run).
func WithEnv(key, value string) Option {
	return func(c *config) { c.env = append(c.env, key+"="+value) }
}

// WithTimeout bounds how long Start waits for every service to be ready
// (default DefaultTimeout).
func WithTimeout(d time.Duration) Option { return func(c *config) { c.timeout = d } }

// WithVolume binds the host folder (a test's t.TempDir(), for one) at
// capsule, writable, and allows exactly that bind. Both paths must be
// absolute.
func WithVolume(host, capsule string) Option {
	return func(c *config) { c.volumes = append(c.volumes, harness.Volume{Host: host, Capsule: capsule}) }
}

// WithAllowVolume lets the manifest's own volumes bind host (and what is
// beneath it), as tori-run run --allow-volume does; "PATH:ro" allows only
// read-only binds. WithVolume needs none: it allows exactly what it binds.
// The host's /etc/tori-run/host.yml is not read.
func WithAllowVolume(host string) Option {
	return func(c *config) { c.allow = append(c.allow, host) }
}

// WithReadOnlyVolume binds the host folder at capsule, read-only.
func WithReadOnlyVolume(host, capsule string) Option {
	return func(c *config) {
		c.volumes = append(c.volumes, harness.Volume{Host: host, Capsule: capsule, ReadOnly: true})
	}
}

// WithLimits sets capsule-wide limits as systemd slice directives, over the
// manifest's resources: WithLimits("MemoryMax=64M", "TasksMax=32"). A limit
// the host cannot enforce fails the Start; it is never dropped.
func WithLimits(directives ...string) Option {
	return func(c *config) { c.limits = append(c.limits, directives...) }
}

// WithSlice reads capsule-wide limits from a systemd .slice file, as
// tori-run run --slice does.
func WithSlice(file string) Option { return func(c *config) { c.slice = file } }

// WithRoot is where an installed name or digest (and the rootfs layers an
// app folder names) are looked up: default $TORI_ROOT, else /opt/tori.
// Nothing is written there.
func WithRoot(dir string) Option { return func(c *config) { c.root = dir } }

// WithLogger receives tori-run's own log lines (default: warnings and
// errors, to the test's log).
func WithLogger(l zerolog.Logger) Option { return func(c *config) { c.log = &l } }
