//go:build !linux

package main

import (
	"github.com/spf13/cobra"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/hostcheck"
)

// Off Linux, the commands that run capsules or use the release store are
// listed as on Linux and say plainly that they need it (exit status 1);
// build, validate, spec and version work.
func linuxOnly(use, short string) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short + " (Linux only)",
		Args: cobra.ArbitraryArgs, DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, _ []string) error { return runtime.NeedLinux(cmd.Name()) },
	}
}

func newInstallCmd(*globals) *cobra.Command {
	return linuxOnly("install CAPSULE.tar.gz", "Verify and install a capsule under <root>/releases/<sha256>/")
}
func newListCmd(*globals) *cobra.Command { return linuxOnly("list", "List installed releases") }
func newVerifyCmd(*globals) *cobra.Command {
	return linuxOnly("verify NAME|DIGEST", "Re-hash an installed release")
}
func newGCCmd(*globals) *cobra.Command { return linuxOnly("gc", "Remove releases nothing references") }
func newRunCmd(*globals) *cobra.Command {
	return linuxOnly("run NAME|DIGEST|capsule.yml|APP-DIR", "Run a capsule in the foreground until SIGINT/SIGTERM")
}
func newDaemonCmd(*globals) *cobra.Command {
	return linuxOnly("daemon", "Supervise every enabled capsule")
}
func newActCmd(_ *globals, action, short string) *cobra.Command {
	return linuxOnly(action+" NAME[/SERVICE]", short)
}
func newStatusCmd(*globals) *cobra.Command {
	return linuxOnly("status [NAME]", "Show capsules and services")
}
func newLogsCmd(*globals) *cobra.Command {
	return linuxOnly("logs NAME[/SERVICE]", "Show a capsule's logs")
}
func newEventsCmd(*globals) *cobra.Command {
	return linuxOnly("events [NAME]", "Follow supervision events")
}
func newEnableCmd(*globals) *cobra.Command {
	return linuxOnly("enable NAME|DIGEST", "Enable a capsule in the daemon")
}
func newDisableCmd(*globals) *cobra.Command { return linuxOnly("disable NAME", "Disable a capsule") }
func newStateCmd(*globals) *cobra.Command   { return linuxOnly("state", "Inspect a capsule's state") }

func newExportImageCmd(*globals) *cobra.Command {
	return linuxOnly("export-image NAME|DIGEST -o FILE", "Export an installed capsule as an OCI image archive")
}
func newContainerReadyCmd(*globals) *cobra.Command {
	return linuxOnly("container-ready", "Exit 0 when the capsule of this container is ready")
}
func newExportManifestsCmd(*globals) *cobra.Command {
	return linuxOnly("export-manifests NAME|DIGEST", "Write a Kubernetes Deployment and a Nomad job for an exported image")
}

// Off Linux, validate has no operator allowances to read: the host checks
// (where volumes are judged) need the Linux host. The flags are accepted so
// that the same command line works everywhere.
type hostFlags struct {
	allow  []string
	config string
}

func addHostFlags(c *cobra.Command, h *hostFlags) {
	c.Flags().StringArrayVar(&h.allow, "allow-volume", nil, "a host path capsules may bind (checked on the Linux host)")
	c.Flags().StringVar(&h.config, "config", "", "the host configuration (read on the Linux host)")
}

// specOptions are the options spec resolves and compiles with: off Linux
// only the layout's roots (the spec names Linux paths under them).
func (g *globals) specOptions() runtime.Options {
	return runtime.Options{Root: g.root, RunDir: envOr("TORI_RUN_DIR", runtime.DefaultRunDir), StateRoot: envOr("TORI_STATE_ROOT", runtime.DefaultStateRoot)}
}

func (g *globals) validateRuntime(*hostcheck.ValidateOptions, *hostFlags) error { return nil }

func newUpgradeCmd(*globals) *cobra.Command {
	return linuxOnly("upgrade NAME DIGEST|ARCHIVE", "Switch a capsule blue-green to another release, gated by health")
}
func newRollbackCmd(*globals) *cobra.Command {
	return linuxOnly("rollback NAME", "Switch a capsule back to its previous release")
}
