//go:build linux

package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	units "github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/tori-run/tori-run/runtime"
)

func newStateCmd(g *globals) *cobra.Command {
	state := &cobra.Command{
		Use:   "state",
		Short: "Inspect a capsule's state (get, put, ls, export)",
		Long: `Read and write a capsule's state. While the capsule runs, through its
state proxy's admin socket (root only); otherwise by opening its state folder
(TORI_STATE_ROOT/NAME) directly.`,
	}
	// with opens the capsule's state for one command.
	with := func(name string, fn func(runtime.CapsuleState) error) error {
		cs, err := runtime.OpenCapsuleState(g.root, envOr("TORI_STATE_ROOT", runtime.DefaultStateRoot), name)
		if err != nil {
			return err
		}
		defer cs.Close()
		return fn(cs)
	}
	get := &cobra.Command{
		Use: "get NAME KEY", Short: "Print the value of a key", Args: usageArgs(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			return with(args[0], func(cs runtime.CapsuleState) error {
				v, err := cs.Get(cmd.Context(), args[1])
				if err != nil {
					return err
				}
				_, err = g.stdout.Write(v)
				return err
			})
		},
	}
	put := &cobra.Command{
		Use: "put NAME KEY [VALUE]", Short: "Set a key (VALUE, or standard input)", Args: usageArgs(cobra.RangeArgs(2, 3)),
		RunE: func(cmd *cobra.Command, args []string) error {
			var value []byte
			if len(args) == 3 {
				value = []byte(args[2])
			} else {
				var err error
				if value, err = io.ReadAll(io.LimitReader(os.Stdin, 16<<20)); err != nil {
					return err
				}
			}
			return with(args[0], func(cs runtime.CapsuleState) error { return cs.Put(cmd.Context(), args[1], value) })
		},
	}
	ls := &cobra.Command{
		Use: "ls NAME [PREFIX]", Short: "List keys", Args: usageArgs(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 2 {
				prefix = args[1]
			}
			return with(args[0], func(cs runtime.CapsuleState) error {
				keys, err := cs.List(cmd.Context(), prefix)
				if err == nil && len(keys) > 0 {
					_, err = fmt.Fprintln(g.stdout, strings.Join(keys, "\n"))
				}
				return err
			})
		},
	}
	var format, output string
	export := &cobra.Command{
		Use: "export NAME [--format parquet|jsonl] [-o FILE]", Short: "Write a capsule's state as one compacted Parquet file or JSON lines",
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format == "" {
				// From the file's extension; --format wins.
				switch strings.ToLower(filepath.Ext(output)) {
				case ".parquet":
					format = "parquet"
				case ".jsonl", ".ndjson", ".json", "":
					format = "jsonl"
				default:
					return usagef("export: cannot tell the format from %q: name it .parquet or .jsonl, or give --format", output)
				}
			}
			if format != "parquet" && format != "jsonl" {
				return usagef("export: --format %q: expected parquet or jsonl", format)
			}
			if format == "parquet" && output == "" {
				return usagef("export: Parquet is binary: give -o FILE")
			}
			return with(args[0], func(cs runtime.CapsuleState) error {
				if output == "" {
					return cs.Export(cmd.Context(), g.stdout, format)
				}
				f, err := os.Create(output)
				if err != nil {
					return err
				}
				if err := cs.Export(cmd.Context(), f, format); err != nil {
					f.Close()
					os.Remove(output)
					return err
				}
				return f.Close()
			})
		},
	}
	export.Flags().StringVar(&format, "format", "", "parquet or jsonl (default: from -o's extension, .parquet or .jsonl; jsonl on standard output)")
	export.Flags().StringVarP(&output, "output", "o", "", "write to FILE instead of standard output")
	printReport := func(rep runtime.StateReport, verb string) {
		fmt.Fprintf(g.stdout, "manifest %d: %d data files, %d log segments, %d intact records\n", rep.Manifest, rep.Files, rep.Segments, rep.Records)
		for _, n := range rep.Notes {
			fmt.Fprintln(g.stdout, "note:", n)
		}
		for _, p := range rep.Problems {
			fmt.Fprintf(g.stdout, "%s: %s\n", verb, p)
		}
	}
	check := &cobra.Command{
		Use: "check NAME", Short: "Verify a stopped capsule's state: data files against their SHA-256 names, every log frame",
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := runtime.CheckState(envOr("TORI_STATE_ROOT", runtime.DefaultStateRoot), args[0])
			if err != nil {
				return err
			}
			printReport(rep, "damaged")
			if !rep.OK() {
				return fmt.Errorf("state of %s is damaged (%d problems); tori-run state repair %s keeps every intact record", args[0], len(rep.Problems), args[0])
			}
			fmt.Fprintln(g.stdout, "ok")
			return nil
		},
	}
	repair := &cobra.Command{
		Use: "repair NAME", Short: "Rewrite a stopped capsule's damaged state keeping every intact record; says what it dropped",
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := runtime.RepairState(envOr("TORI_STATE_ROOT", runtime.DefaultStateRoot), args[0])
			if err != nil {
				return err
			}
			printReport(rep, "dropped")
			if rep.OK() {
				fmt.Fprintln(g.stdout, "nothing dropped")
			}
			return nil
		},
	}
	state.AddCommand(get, put, ls, export, check, repair)
	return state
}

// stateLimits are the operator's limits on every capsule's state, as flags
// of run and daemon (the host configuration's state: section maps onto the
// same runtime.Options fields).
type stateLimits struct {
	quota   string
	count   int
	age     time.Duration
	ceiling int
}

func (l *stateLimits) register(c *cobra.Command) {
	c.Flags().StringVar(&l.quota, "state-quota", "", "bytes each capsule's state may take on disk, e.g. 512M, 1G; \"none\" for no quota (default 1G)")
	c.Flags().IntVar(&l.count, "event-retention-count", 0, "keep only the newest N events of each capsule (default: all)")
	c.Flags().DurationVar(&l.age, "event-retention-age", 0, "drop events older than this, e.g. 720h (default: none)")
	c.Flags().IntVar(&l.ceiling, "max-tokens-ceiling", 0, fmt.Sprintf("ceiling on a capsule's MAX_TOKENS_PER_MIN (default %d)", runtime.DefaultMaxTokensCeiling))
}

func (l *stateLimits) apply(o *runtime.Options) error {
	switch l.quota {
	case "":
	case "none", "0":
		o.StateQuota = -1
	default:
		n, err := units.RAMInBytes(l.quota)
		if err != nil || n <= 0 {
			return usagef("--state-quota %q: expected a size such as 512M or 1G, or none", l.quota)
		}
		o.StateQuota = n
	}
	if l.count < 0 || l.age < 0 || l.ceiling < 0 {
		return usagef("--event-retention-count, --event-retention-age and --max-tokens-ceiling cannot be negative")
	}
	o.EventRetentionCount, o.EventRetentionAge, o.MaxTokensCeiling = l.count, l.age, l.ceiling
	return nil
}
