//go:build linux

package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tori-run/tori-run/runtime/daemon"
)

func newUpgradeCmd(g *globals) *cobra.Command {
	var socket string
	c := &cobra.Command{
		Use:   "upgrade NAME DIGEST|ARCHIVE",
		Short: "Switch a capsule blue-green to another release, gated by readiness and health",
		Long: `Start the release beside the running one (its own instance; the same
listening sockets and state), wait until every service is ready and then
healthy for the new release's update.min_healthy_time within
update.healthy_deadline, then stop the old release gracefully. If the new
release fails in any way it is stopped and the old one, which never stopped
serving, stays. An archive is installed first. Progress lines, then one
verdict line; exit 0 only when the new release serves.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[1]
			if fi, err := os.Stat(ref); err == nil && !fi.IsDir() {
				s, err := g.store()
				if err != nil {
					return err
				}
				rel, _, err := s.Install(cmd.Context(), ref)
				if err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "installed %s %s (%s)\n", rel.Name, rel.Version, rel.Digest[:12])
				ref = rel.Digest
			}
			return switchRelease(g, cmd, socket, args[0], ref, daemon.KindUpgrade)
		},
	}
	socketFlag(c, &socket)
	return c
}

func newRollbackCmd(g *globals) *cobra.Command {
	var socket string
	c := &cobra.Command{
		Use:   "rollback NAME",
		Short: "Switch a capsule back to its previous stable release, the same way",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return switchRelease(g, cmd, socket, args[0], "", daemon.KindRollback)
		},
	}
	socketFlag(c, &socket)
	return c
}

func switchRelease(g *globals, cmd *cobra.Command, socket, name, ref, kind string) error {
	start := time.Now()
	v, err := daemon.NewClient(socket).Upgrade(cmd.Context(), name, ref, kind, func(p daemon.UpgradeProgress) {
		fmt.Fprintf(g.stdout, "%6.1fs %-15s %s\n", p.Time.Sub(start).Seconds(), p.Phase, p.Message)
	})
	if err != nil {
		return err
	}
	extra := ""
	if v.SwitchTime > 0 {
		extra = fmt.Sprintf(" (switch %s)", v.SwitchTime.Round(100*time.Microsecond))
	}
	if !v.OK {
		return errors.New(kind + " failed: " + v.Message)
	}
	fmt.Fprintf(g.stdout, "%s %s: %s%s\n", strings.ToUpper(kind[:1])+kind[1:], "ok", v.Message, extra)
	return nil
}

// upgradeLine is what status shows of a capsule's releases beyond the
// current one: the previous stable and an upgrade under way.
func upgradeLine(c daemon.CapsuleStatus) string {
	var parts []string
	if c.Previous != "" {
		parts = append(parts, "previous stable "+short(c.Previous))
	}
	if u := c.Upgrade; u != nil {
		parts = append(parts, fmt.Sprintf("%s to %s: %s since %s", u.Kind, short(u.Candidate), u.Phase, u.Since.Local().Format("15:04:05")))
	}
	return strings.Join(parts, "; ")
}

func short(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}
