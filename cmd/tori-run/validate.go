package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tori-run/tori-run/runtime"
	"github.com/tori-run/tori-run/runtime/hostcheck"
)

func newValidateCmd(g *globals) *cobra.Command {
	var (
		o      hostcheck.ValidateOptions
		asJSON bool
		hf     hostFlags
	)
	c := &cobra.Command{
		Use:   "validate [capsule.yml | APP-DIR | APP.zip | CAPSULE.tar.gz | RELEASE-DIR] [--host]",
		Short: "Check a manifest, its app's pins, and the host",
		Long: `Check a capsule manifest strictly (every problem, with file, line and field),
the app's pinned requirements and entrypoint when an app folder or zip is
given, and with --host what this machine offers: kernel, OverlayFS, cgroup
mode and the limits it can enforce, root, state folder, interpreter, and
whether each volume is allowed here (--allow-volume, --config).

Exit status: 0 when nothing failed, 1 when a check failed, 2 on a usage error.`,
		Example: `  tori-run validate examples/metacog/capsule.yml
  tori-run validate examples/metacog --host
  tori-run validate --manifest capsule.yml app.zip --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := ""
			if len(args) == 1 {
				target = args[0]
			}
			if target == "" && !o.Host && o.Manifest == "" {
				return usagef("validate: give a capsule.yml, an app folder or zip, or --host")
			}
			o.StateDir = envOr("TORI_STATE_ROOT", runtime.DefaultStateRoot)
			if err := g.validateRuntime(&o, &hf); err != nil {
				return err
			}
			r := hostcheck.Validate(target, o)
			if asJSON {
				enc := json.NewEncoder(g.stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				printReport(g.stdout, r)
			}
			if r.Failed() {
				return exitError{exitFailure}
			}
			return nil
		},
	}
	f := c.Flags()
	f.BoolVar(&o.Host, "host", false, "also check this host: kernel, OverlayFS, cgroups, root, state folder, interpreter")
	f.StringVar(&o.Manifest, "manifest", "", "manifest to check an app folder or zip against (default: its capsule.yml)")
	f.StringVar(&o.Slice, "slice", "", "systemd .slice file whose limits override the manifest's resources")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON (stable schema)")
	addHostFlags(c, &hf)
	return c
}

func printReport(w io.Writer, r *hostcheck.Report) {
	head := r.Kind
	if r.Target != "" {
		head = r.Target + " (" + r.Kind + ")"
	}
	fmt.Fprintf(w, "validate %s\n", head)
	for _, f := range r.Findings {
		where := ""
		// A passing finding names its file in its message already.
		if loc := f.Location(); loc != "" && f.Status != runtime.StatusPass {
			where = loc + ": "
		}
		fmt.Fprintf(w, "  %-4s  %-17s %s%s\n", strings.ToUpper(string(f.Status)), f.Check, where, f.Message)
		if f.Hint != "" && f.Status != runtime.StatusPass {
			fmt.Fprintf(w, "        %-17s hint: %s\n", "", f.Hint)
		}
	}
	fmt.Fprintf(w, "result: %d pass, %d warn, %d fail\n", r.Count(runtime.StatusPass), r.Count(runtime.StatusWarn), r.Count(runtime.StatusFail))
}
