package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tori-run/tori-run/runtime"
)

// spec works on every system: the plan it prints is compiled from the
// host's facts on Linux, and from stated, assumed facts elsewhere (or with
// --assume-host), so that the Windows and Linux builds print the same
// config.json for the same capsule (scripts/cross.sh checks it).
func newSpecCmd(g *globals) *cobra.Command {
	var assume bool
	c := &cobra.Command{
		Use:   "spec NAME|DIGEST|capsule.yml",
		Short: "Print the OCI runtime-spec config.json tori-run uses for a capsule",
		Long: `Print the OCI runtime-spec config.json tori-run runs a capsule's container
with. On Linux it is compiled from this host's facts (cgroup mode, kernel,
capabilities, system folders, /etc); off Linux, and with --assume-host, from
assumed ones, which are named on stderr: cgroup v2, kernel 6.1, merged /usr,
a Debian 12 /etc, tori-run at /usr/local/bin/tori-run.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, assumed, err := runtime.SpecFor(args[0], g.specOptions(), assume)
			if err != nil {
				return err
			}
			if len(assumed) > 0 {
				fmt.Fprintf(g.stderr, "tori-run spec: no host probed; assumed: %s\n", strings.Join(assumed, "; "))
			}
			enc := json.NewEncoder(g.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(s)
		},
	}
	c.Flags().BoolVar(&assume, "assume-host", false, "compile from the assumed host facts spec uses off Linux instead of probing this host")
	return c
}
