//go:build linux

package main

import (
	"fmt"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/tori-run/tori-run/runtime"
)

func (g *globals) runtimeOptions(slice, cgroupParent string, withoutLimits ...bool) runtime.Options {
	return runtime.Options{
		Root:         g.root,
		RunDir:       envOr("TORI_RUN_DIR", runtime.DefaultRunDir),
		CgroupParent: cgroupParent,
		Slice:        slice,
		Log:          g.log,
		StateRoot:    envOr("TORI_STATE_ROOT", runtime.DefaultStateRoot),
		// Without root only: run a capsule without the limits it asks for.
		WithoutLimits: len(withoutLimits) > 0 && withoutLimits[0],
	}
}

func newRunCmd(g *globals) *cobra.Command {
	var slice, cgroupParent string
	var hf hostFlags
	var inContainer bool
	var withoutLimits bool
	var limits stateLimits
	var metricsAddr string
	c := &cobra.Command{
		Use:   "run NAME|DIGEST|capsule.yml|APP-DIR",
		Short: "Run a capsule in the foreground until SIGINT/SIGTERM",
		Long: `Run a capsule in the foreground: mount its app under a scratch layer, create
its container (tori-run's init as PID 1) and cgroups, start every service in
after: order, and stream their output prefixed with the service's name. On
SIGINT or SIGTERM each service gets its stop signal, in reverse order, then
after its stop timeout its whole process tree is killed; nothing of the
instance is left behind.

A run whose terminal or output went away stops the same way: SIGHUP (the
terminal hung up), and SIGPIPE or a write error on the output it echoes
(the reader of its stdout or stderr is gone), are stop requests, so no
capsule is ever left running without its runner.

Exit status: 0 when every service was stopped on request or exited 0, 1 when
one failed to start, failed, or was OOM-killed (a summary says which).

--in-container is container mode, the entrypoint of an exported image
(export-image): PID 1 of a container an engine made, the services as plain
children under the same supervisor, the state proxy at TORI_STATE_SOCKET, the
store on the mounted state volume; no namespaces, mounts or cgroups of its own.
Without an argument it runs the image's capsule (docs/CLUSTER.md).`,
		Example: `  tori-run run tori-metacognitive --slice examples/metacog/tori-metacog.slice
  tori-run run examples/metacog          # straight from an app folder, without building
  tori-run run tori-metacognitive --allow-volume /opt/tori/state   # the operator allows its volume

A volume's host path must be allowed by the operator (--allow-volume, or
volumes: in the host configuration); tori-run's own folders never are.`,
		Args: cobra.RangeArgs(0, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if inContainer {
				if slice != "" || cgroupParent != "" {
					return usagef("run --in-container: --slice and --cgroup-parent do not apply: in a container the limits are the engine's")
				}
				return g.runInContainer(cmd, args)
			}
			if len(args) != 1 {
				return usagef("run: expected NAME|DIGEST|capsule.yml|APP-DIR (only --in-container runs the image's own capsule without one)")
			}
			o := g.runtimeOptions(slice, cgroupParent, withoutLimits)
			var err error
			if o.Host, err = hf.load(); err != nil {
				return err
			}
			if err := limits.apply(&o); err != nil {
				return err
			}
			o.MetricsAddr = metricsAddr
			// A hang-up or a broken stdout/stderr stops the capsule as SIGTERM
			// does; by default either would kill tori-run and orphan the
			// capsule's init with its cgroups and mounts. With SIGPIPE
			// caught, a write to a closed pipe returns EPIPE instead.
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGHUP, syscall.SIGPIPE)
			defer stop()
			res, err := runtime.Run(ctx, args[0], o, g.stdout)
			if err != nil {
				return err
			}
			fmt.Fprint(g.stderr, res.Summary())
			if !res.OK() {
				return exitError{exitFailure}
			}
			return nil
		},
	}
	c.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics (GET /metrics) at this address, e.g. 127.0.0.1:9464")
	c.Flags().StringVar(&slice, "slice", "", "systemd .slice file whose limits override the manifest's resources")
	c.Flags().BoolVar(&inContainer, "in-container", false, "container mode: PID 1 of a container made by an engine (see docs/CLUSTER.md)")
	c.Flags().StringVar(&cgroupParent, "cgroup-parent", "", "cgroup to create the capsule's cgroups under (default: under tori-run's own)")
	addHostFlags(c, &hf)
	c.Flags().BoolVar(&withoutLimits, "without-limits", false, "as a user who is not root: run a capsule whose limits you cannot get, without them (said at every start)")
	limits.register(c)
	return c
}

// specOptions are the options spec resolves and compiles with.
func (g *globals) specOptions() runtime.Options { return g.runtimeOptions("", "") }
