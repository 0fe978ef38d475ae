package main

import (
	"fmt"
	"io"
	"os"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/tori-run/tori-run/runtime"
)

// globals are the flags every command takes.
type globals struct {
	root      string
	logLevel  string
	logFormat string
	stdout    io.Writer
	stderr    *os.File
	log       zerolog.Logger
}

func newRootCmd(stdout, stderr *os.File) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "tori-run",
		Short: "Build, install, run and supervise capsules",
		Long: `tori-run builds immutable, content-addressed capsules from an app and a
capsule.yml, installs them under <root>/releases/<sha256>/, and runs them
isolated (OverlayFS, Linux namespaces, cgroup limits) under a supervisor,
without systemd. Also callable as capsbuild and capsdeploy.

Exit status: 0 success, 1 failure, 2 usage error.`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: true},
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			l, err := runtime.NewLogger(g.stderr, g.logFormat, g.logLevel)
			if err != nil {
				return usageError{err}
			}
			g.log = l
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&g.root, "root", envOr("TORI_ROOT", runtime.DefaultRoot), "tori-run's root folder: releases/, instances/ (env TORI_ROOT)")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	pf.StringVar(&g.logFormat, "log-format", "auto", "log format: auto (console on a terminal, else JSON), console or json")

	root.AddGroup(
		&cobra.Group{ID: "artifacts", Title: "Capsule artifacts:"},
		&cobra.Group{ID: "run", Title: "Running capsules:"},
		&cobra.Group{ID: "daemon", Title: "Talking to the daemon:"},
		&cobra.Group{ID: "other", Title: "Other commands:"},
	)
	root.SetHelpCommandGroupID("other")
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			if c.Args == nil {
				c.Args = cobra.NoArgs
			}
			c.Args = usageArgs(c.Args)
			root.AddCommand(c)
		}
	}
	add("artifacts",
		newValidateCmd(g),
		newBuildCmd(g),
		newInstallCmd(g),
		newListCmd(g),
		newVerifyCmd(g),
		newGCCmd(g),
	)
	add("run",
		newRunCmd(g),
		newSpecCmd(g),
		newDaemonCmd(g),
		newExportImageCmd(g),
		newContainerReadyCmd(g),
		newExportManifestsCmd(g),
		newUpgradeCmd(g),
		newRollbackCmd(g),
	)
	add("daemon",
		newActCmd(g, "start", "Start a capsule or one of its services"),
		newActCmd(g, "stop", "Stop a capsule or one of its services"),
		newActCmd(g, "restart", "Restart a capsule or one of its services"),
		newStatusCmd(g),
		newLogsCmd(g),
		newEventsCmd(g),
		newEnableCmd(g),
		newDisableCmd(g),
	)
	add("run", newStateCmd(g))
	add("other", newVersionCmd(g))
	return root
}

// usageArgs turns an argument-count error into a usage error (exit 2).
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
		}
		return nil
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
