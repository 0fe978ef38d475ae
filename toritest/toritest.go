package toritest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/harness"
	"github.com/tori-run/tori-run/state/client"
)

// The hook that makes the test binary the capsules' init (see the package
// doc). It returns at once unless this process is a capsule's init.
func init() { runtime.MaybeInit() }

// DefaultTimeout bounds a Start: every service ready within it, or the test
// fails with their logs. testcontainers-go's default, for the same job.
const DefaultTimeout = 60 * time.Second

// Capsule is a running capsule of a test.
type Capsule struct {
	tb   testing.TB
	h    *harness.Capsule
	dir  string // this Start's folder (sweep.go)
	once sync.Once
	st   *client.Client
}

// Start runs the capsule ref — an app folder (or its capsule.yml), a
// capsule archive (installed once per test process and file into a release
// store shared by this user's Starts, $TMPDIR/toritest-UID/cache), or the name
// or digest of a release installed under WithRoot's root — and returns once
// every service is ready by the capsule's own readiness: sd_notify READY=1,
// its exec/http/tcp ready probe, or for a service without one, once it is
// started. It waits on the supervisor's state changes, not by polling.
//
// A service that fails (a crash loop, a missing program, a failed
// dependency) or the timeout (WithTimeout, default 60 s) fails the test at
// once, with each service's state and its logs in the message. tb.Cleanup
// stops the capsule and removes everything it made.
func Start(tb testing.TB, ref string, opts ...Option) *Capsule {
	tb.Helper()
	c, err := start(tb, ref, opts...)
	if err != nil {
		tb.Fatalf("toritest.Start(%q): %v", ref, err)
	}
	return c
}

func start(tb testing.TB, ref string, opts ...Option) (*Capsule, error) {
	cfg := config{timeout: DefaultTimeout, root: os.Getenv("TORI_ROOT")}
	if cfg.root == "" {
		cfg.root = runtime.DefaultRoot
	}
	for _, o := range opts {
		o(&cfg)
	}
	dir, err := newStartDir()
	if err != nil {
		return nil, err
	}
	c := &Capsule{tb: tb, dir: dir}
	tb.Cleanup(func() {
		if err := c.cleanup(); err != nil {
			tb.Errorf("toritest: cleaning up %s: %v", ref, err)
		}
	})
	log := zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.WarnLevel)
	if cfg.log != nil {
		log = *cfg.log
	}
	ho := harness.Options{
		Options: runtime.Options{
			Root: filepath.Join(dir, startRoot), RunDir: filepath.Join(dir, startRun), StateRoot: filepath.Join(dir, startState),
			Slice: cfg.slice, Log: log, AppInCapsule: true,
			// The cgroup probes' answers, shared by every Start of this
			// user (keyed by boot, cgroup mounts and our cgroup): a fresh
			// run dir per Start would probe again each time (~3 ms).
			ProbeCacheDir: baseDir(),
		},
		SourceRoot: cfg.root, ArchiveCache: filepath.Join(baseDir(), "cache"), Env: cfg.env, Volumes: cfg.volumes, AllowVolumes: cfg.allow, Limits: cfg.limits, DieWithHost: true,
		UnfilteredWithoutSeccomp: true,
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	h, err := harness.Start(ctx, ref, ho)
	if err != nil {
		return c, err
	}
	c.h = h
	for _, w := range h.Warnings {
		tb.Logf("toritest: %s", w)
	}
	return c, nil
}

func (c *Capsule) cleanup() error { return c.Stop() }

// Stop stops every service (its stop signal, then its stop timeout, then
// its cgroup is killed) in reverse dependency order and removes the
// capsule: processes, mounts, cgroups, container state, scratch layer, and
// this Start's folder. It is also done by tb.Cleanup; calling it
// twice is harmless.
func (c *Capsule) Stop() error {
	var err error
	c.once.Do(func() {
		if c.st != nil {
			c.st.Close()
		}
		if c.h != nil {
			err = c.h.Stop(context.Background())
		}
		if err == nil {
			// What failed to go stays for the next Start's sweep, which
			// has the instance's records to retry with.
			if err = harness.RemoveTree(c.dir); err == nil {
				releaseStartDir()
			}
		}
	})
	return err
}

// Name is the capsule's name (from its manifest).
func (c *Capsule) Name() string { return c.h.Manifest.Name }

// Logs returns what the service has written so far to stdout and stderr,
// a line each, in order.
func (c *Capsule) Logs(service string) ([]byte, error) { return c.h.Logs(service) }

// State is a client of the capsule's state proxy, with the host's own
// access (any key, no rate limit). It is closed by Stop.
func (c *Capsule) State() *client.Client {
	if c.st == nil {
		c.st = client.New(c.h.StateSocket(), client.Options{})
	}
	return c.st
}

// Exec runs argv inside the capsule, in the service's namespaces, cgroup
// and environment, and returns its output (stdout and stderr together). A
// program that does not exit 0 is an error that carries the output too. It
// is bounded by the Start's timeout.
func (c *Capsule) Exec(service string, argv ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	return c.h.ExecOutput(ctx, service, argv...)
}

// Pid is the host pid of the service's current process (it changes when
// the service restarts).
func (c *Capsule) Pid(service string) (int, error) { return c.h.Pid(service) }

// Sockets are the capsule's listening sockets (sockets: in its manifest),
// held by the runtime for the capsule's life: their addresses by name, a
// tcp port 0 showing the port the kernel chose, a unix socket its path on
// the host.
func (c *Capsule) Sockets() map[string]string { return c.h.Sockets() }

// Dir is where this Start keeps the capsule's root, run and state folders;
// removed at cleanup.
func (c *Capsule) Dir() string { return c.dir }

// ID is the capsule instance's id (its container and cgroup name).
func (c *Capsule) ID() string { return c.h.ID }

// String names the capsule for messages.
func (c *Capsule) String() string { return fmt.Sprintf("capsule %s (%s)", c.h.Manifest.Name, c.h.ID) }
