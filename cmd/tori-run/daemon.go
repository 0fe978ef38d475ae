//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/daemon"
)

func newDaemonCmd(g *globals) *cobra.Command {
	var (
		o           daemon.Options
		hf          hostFlags
		limits      stateLimits
		metricsAddr string
	)
	c := &cobra.Command{
		Use:   "daemon",
		Short: "Supervise every enabled capsule and serve the control API",
		Long: `Run every enabled capsule (tori-run enable NAME) under the supervisor and
serve the control API on a Unix socket (mode 0600, root only) for start, stop,
restart, status, logs and events. A capsule's failure does not stop the
daemon. Start it from the host's init system so that enabled capsules come
back after a reboot. On SIGTERM it stops every capsule in order within
--stop-deadline and exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Options = g.runtimeOptions("", o.CgroupParent)
			var err error
			if o.Host, err = hf.load(); err != nil {
				return err
			}
			if err := limits.apply(&o.Options); err != nil {
				return err
			}
			o.MetricsAddr = metricsAddr
			return daemon.Run(cmd.Context(), o)
		},
	}
	c.Flags().StringVar(&o.Socket, "socket", daemon.DefaultSocket, "the control API's Unix socket")
	c.Flags().DurationVar(&o.StopDeadline, "stop-deadline", time.Minute, "time to stop every capsule at SIGTERM")
	c.Flags().StringVar(&o.CgroupParent, "cgroup-parent", "", "cgroup to create the capsules' cgroups under (default: under tori-run's own)")
	c.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve Prometheus metrics (GET /metrics) at this address, e.g. 127.0.0.1:9464")
	addHostFlags(c, &hf)
	limits.register(c)
	return c
}

func socketFlag(c *cobra.Command, p *string) {
	c.Flags().StringVar(p, "socket", daemon.DefaultSocket, "the daemon's control socket")
}

func newActCmd(g *globals, action, short string) *cobra.Command {
	var socket string
	c := &cobra.Command{
		Use:   action + " NAME[/SERVICE]",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := daemon.NewClient(socket).Act(cmd.Context(), action, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "%s: %s requested\n", args[0], action)
			return nil
		},
	}
	socketFlag(c, &socket)
	return c
}

func newStatusCmd(g *globals) *cobra.Command {
	var (
		socket string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show each service: state, pid, uptime, restarts, last exit, memory, CPU",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			st, err := daemon.NewClient(socket).Status(cmd.Context(), name)
			if err != nil {
				return err
			}
			if asJSON {
				if st == nil {
					st = []daemon.CapsuleStatus{}
				}
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printStatus(g, st)
			return nil
		},
	}
	socketFlag(c, &socket)
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func printStatus(g *globals, st []daemon.CapsuleStatus) {
	tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CAPSULE/SERVICE\tSTATE\tREASON\tPID\tUPTIME\tRESTARTS\tLAST EXIT\tMEMORY\tCPU")
	for _, c := range st {
		rel := c.Release
		if len(rel) > 12 {
			rel = rel[:12]
		}
		if c.Seccomp != "" && c.Seccomp != "default" {
			rel += ", seccomp " + c.Seccomp // a weaker or other filter is named
		}
		if c.BuildSHA != "" {
			sha := c.BuildSHA
			if len(sha) > 12 {
				sha = sha[:12]
			}
			rel += ", build " + sha
		}
		fmt.Fprintf(tw, "%s (%s)\t%s\t%s\t\t\t\t\t\t\n", c.Name, rel, c.State, c.Error)
		if line := upgradeLine(c); line != "" {
			fmt.Fprintf(tw, "  %s\t\t\t\t\t\t\t\t\n", line)
		}
		if u := c.Storage; u != nil {
			quota := "no quota"
			if u.QuotaBytes > 0 {
				quota = units.BytesSize(float64(u.QuotaBytes)) + " quota"
			}
			fmt.Fprintf(tw, "  (state: %d keys, %d events)\t%s\t%s\t\t\t\t\t%s of %s\t\n", u.Keys, u.Events, map[bool]string{true: "failing", false: "ok"}[u.Failed != ""], u.Failed,
				units.BytesSize(float64(u.UsedBytes)), quota)
		}
		for _, s := range c.Services {
			pid, up, exit, mem, cpu := "-", "-", "-", "-", "-"
			if s.Pid != 0 {
				pid, up = fmt.Sprint(s.Pid), s.Uptime.Round(time.Second).String()
			}
			if s.LastExit != nil {
				exit = s.LastExit.String()
				if s.LastReason != "" {
					exit += " (" + string(s.LastReason) + ")"
				}
			}
			if s.Stats != nil {
				mem, cpu = units.BytesSize(float64(s.Stats.MemoryBytes)), s.Stats.CPU.Round(time.Millisecond).String()
			}
			state := string(s.State)
			if s.Health != "" {
				state += "/" + string(s.Health)
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Name, state, s.Reason, pid, up, s.Restarts, exit, mem, cpu)
		}
	}
	_ = tw.Flush()
}

func newLogsCmd(g *globals) *cobra.Command {
	var (
		follow bool
		since  string
		tail   int
	)
	c := &cobra.Command{
		Use:   "logs NAME[/SERVICE] [-f] [--since D] [--tail N]",
		Short: "Show a capsule's logs",
		Long: `Show the logs of a capsule's services (or one service), merged in time order:
each line with its time, service and stream. Read from <root>/logs/NAME, so it
works whether or not the capsule runs.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := runtime.LogOptions{Tail: tail, Follow: follow}
			if since != "" {
				t, err := parseSince(since)
				if err != nil {
					return usageError{err}
				}
				o.Since = t
			}
			return quietOnSignal(cmd, runtime.ReadCapsuleLogs(cmd.Context(), g.root, args[0], o, func(l runtime.LogLine) error {
				_, err := fmt.Fprintf(g.stdout, "%s %-14s %s | %s\n", l.Time.Local().Format("15:04:05.000"), l.Service, l.Stream, l.Text)
				return err
			}))
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	c.Flags().StringVar(&since, "since", "", "only lines newer than this: a duration (10m) or an RFC 3339 time")
	c.Flags().IntVarP(&tail, "tail", "n", 0, "only the last N lines (0: all)")
	return c
}

func parseSince(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return time.Now().Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: expected a duration such as 10m or a time such as 2026-11-27T10:00:00Z", s)
}

func newEventsCmd(g *globals) *cobra.Command {
	var (
		socket string
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "events [-f]",
		Short: "Stream supervision events: started, ready, exited, oom-killed, restarting, failed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return quietOnSignal(cmd, daemon.NewClient(socket).Events(cmd.Context(), func(ev daemon.Event) error {
				if asJSON {
					b, _ := json.Marshal(ev)
					_, err := fmt.Fprintln(g.stdout, string(b))
					return err
				}
				var extra []string
				if ev.Pid != 0 {
					extra = append(extra, fmt.Sprintf("pid %d", ev.Pid))
				}
				if ev.Exit != nil {
					extra = append(extra, ev.Exit.String())
				}
				if ev.Delay > 0 {
					extra = append(extra, "in "+ev.Delay.String())
				}
				if ev.Message != "" && !strings.Contains(strings.Join(extra, "; "), ev.Message) && !strings.Contains(ev.Message, "restarting in") {
					extra = append(extra, ev.Message)
				}
				_, err := fmt.Fprintf(g.stdout, "%s %s/%s %s (%s) %s\n", ev.Time.Local().Format("15:04:05.000"), ev.Capsule, ev.Service, ev.Type, ev.Reason, strings.Join(extra, "; "))
				return err
			}))
		},
	}
	socketFlag(c, &socket)
	c.Flags().BoolP("follow", "f", true, "follow (the default; events are a stream)")
	c.Flags().BoolVar(&asJSON, "json", false, "one JSON object per line")
	return c
}

func newEnableCmd(g *globals) *cobra.Command {
	var socket string
	var hf hostFlags
	c := &cobra.Command{
		Use:   "enable NAME|DIGEST",
		Short: "Have the daemon run a capsule, now and after reboots",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := g.runtimeOptions("", "")
			var err error
			if o.Host, err = hf.load(); err != nil {
				return err
			}
			// Refused volumes fail here, not later in the daemon.
			if err := runtime.CheckVolumes(args[0], o); err != nil {
				return err
			}
			name, digest, err := daemon.Enable(g.root, args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "enabled %s at release %s\n", name, digest[:12])
			if len(hf.allow) > 0 {
				fmt.Fprintf(g.stdout, "the daemon must allow the same volumes: run it with the same --allow-volume flags, or list them in its host configuration\n")
			}
			if err := daemon.NewClient(socket).Act(cmd.Context(), "start", name); err != nil {
				fmt.Fprintf(g.stdout, "not started now: %v\n", err)
			}
			return nil
		},
	}
	socketFlag(c, &socket)
	addHostFlags(c, &hf)
	return c
}

func newDisableCmd(g *globals) *cobra.Command {
	var socket string
	c := &cobra.Command{
		Use:   "disable NAME",
		Short: "Stop having the daemon run a capsule (and stop it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := daemon.NewClient(socket).Act(cmd.Context(), "stop", args[0]); err != nil {
				fmt.Fprintf(g.stdout, "not stopped now: %v\n", err)
			}
			if err := daemon.Disable(g.root, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "disabled %s\n", args[0])
			return nil
		},
	}
	socketFlag(c, &socket)
	return c
}

// quietOnSignal makes a following command (logs -f, events) end with
// status 0 when interrupted: that is how it is meant to end.
func quietOnSignal(cmd *cobra.Command, err error) error {
	if err != nil && cmd.Context().Err() != nil {
		return nil
	}
	return err
}
