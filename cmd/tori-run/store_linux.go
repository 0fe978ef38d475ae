//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/tori-run/tori-run/release"
	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/harness"
)

// The commands on the release store (install, list, verify, gc) need
// Linux: the store relies on flock, syncfs and *at calls.

func (g *globals) store() (*release.Store, error) {
	opts := []release.Option{release.WithLogger(g.log)}
	if p := g.progressWriter(); p != nil {
		opts = append(opts, release.WithProgress(p))
	}
	return release.Open(g.root, opts...)
}

func newInstallCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "install CAPSULE.tar.gz",
		Short: "Verify and install a capsule under <root>/releases/<sha256>/",
		Long: `Verify a capsule archive (its digest and every file against its index) and
unpack it atomically and read-only to <root>/releases/<sha256>/. Installing an
installed capsule says so and succeeds. Hostile archives (paths leaving the
release, links pointing out, device files, setuid bits, bombs) are refused
with nothing left behind.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			rel, already, err := s.Install(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			verb := "installed"
			if already {
				verb = "already installed"
			}
			fmt.Fprintf(g.stdout, "%s %s %s\n  %s\n", verb, rel.Name, rel.Version, rel.Path)
			return nil
		},
	}
}

func newListCmd(g *globals) *cobra.Command {
	var asJSON bool
	c := &cobra.Command{
		Use:   "list",
		Short: "List installed releases",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			rels, err := s.List()
			if err != nil {
				return err
			}
			if asJSON {
				if rels == nil {
					rels = []release.Release{}
				}
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rels)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tDIGEST\tBUILD SHA\tSIZE\tINSTALLED\tIN USE")
			for _, r := range rels {
				inUse := "no"
				if r.InUse {
					inUse = "yes (" + strings.Join(r.UsedBy, ", ") + ")"
				}
				sha := runtime.ShowBuildSHA(r.BuildSHA)
				if len(sha) > 12 {
					sha = sha[:12]
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Version, r.Digest[:12], sha, units.BytesSize(float64(r.Size)),
					r.InstalledAt.Local().Format(time.DateTime), inUse)
			}
			return tw.Flush()
		},
	}
	c.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return c
}

func newVerifyCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify NAME|DIGEST",
		Short: "Re-hash an installed release against its record",
		Long:  "Re-hash an installed release and report every file changed, missing or added since install. Exit 1 if any.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.store()
			if err != nil {
				return err
			}
			rep, err := s.Verify(args[0])
			if err != nil {
				return err
			}
			for _, p := range rep.Changed {
				fmt.Fprintf(g.stdout, "changed  %s: %s\n", p, rep.Reasons[p])
			}
			for _, p := range rep.Missing {
				fmt.Fprintf(g.stdout, "missing  %s\n", p)
			}
			for _, p := range rep.Added {
				fmt.Fprintf(g.stdout, "added    %s\n", p)
			}
			r := rep.Release
			if !rep.OK() {
				fmt.Fprintf(g.stdout, "%s %s (%s): %d changed, %d missing, %d added\n", r.Name, r.Version, r.Digest[:12], len(rep.Changed), len(rep.Missing), len(rep.Added))
				return exitError{exitFailure}
			}
			fmt.Fprintf(g.stdout, "%s %s (%s): %d files as installed\n", r.Name, r.Version, r.Digest[:12], r.Files)
			return nil
		},
	}
}

func newGCCmd(g *globals) *cobra.Command {
	var o release.GCOptions
	c := &cobra.Command{
		Use:   "gc [--dry-run] [--keep N]",
		Short: "Remove releases nothing references, and what ended capsules left",
		Long: `Remove what capsules left behind when whoever ran them ended (even by kill -9):
instances in --root of a tori-run run that is gone (their container state in
TORI_RUN_DIR, cgroups, mounts, files), and the folders of ended test processes
of the toritest package ($TMPDIR/toritest-UID, each Start's instances first).
A daemon's instances are left for the next daemon to adopt. Then remove
installed releases that no capsule references (as current or previous
release, or by a running instance) and that are not among the newest --keep
of their name.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Keep < 0 {
				return usagef("gc: --keep %d: expected 0 or more", o.Keep)
			}
			verb := "removed"
			if o.DryRun {
				verb = "would remove"
			}
			// Leftovers first: a release only a dead instance used is
			// unreferenced once that instance is gone.
			swept, serr := harness.SweepLeftovers(cmd.Context(), g.runtimeOptions("", ""), harness.Base(), o.DryRun)
			for _, s := range swept {
				fmt.Fprintf(g.stdout, "%s %s\n", verb, s)
			}
			s, err := g.store()
			if err != nil {
				return errors.Join(serr, err)
			}
			removed, err := s.GC(cmd.Context(), o)
			err = errors.Join(serr, err)
			for _, r := range removed {
				fmt.Fprintf(g.stdout, "%s %s %s (%s, %s)\n", verb, r.Name, r.Version, r.Digest[:12], units.BytesSize(float64(r.Size)))
			}
			if len(removed) == 0 && len(swept) == 0 && err == nil {
				fmt.Fprintln(g.stdout, "nothing to remove")
			}
			return err
		},
	}
	c.Flags().BoolVar(&o.DryRun, "dry-run", false, "list what would be removed, remove nothing")
	c.Flags().IntVar(&o.Keep, "keep", 0, "keep the newest N releases of each name even if unreferenced")
	return c
}
