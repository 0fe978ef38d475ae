package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

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
	stateRoot := func() string { return envOr("TORI_STATE_ROOT", runtime.DefaultStateRoot) }
	get := &cobra.Command{
		Use: "get NAME KEY", Short: "Print the value of a key", Args: usageArgs(cobra.ExactArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if c := runtime.StateClient(g.root, args[0]); c != nil {
				v, err := c.Get(cmd.Context(), args[1])
				if err != nil {
					return err
				}
				_, err = g.stdout.Write(v)
				return err
			}
			st, err := runtime.OpenState(stateRoot(), args[0])
			if err != nil {
				return err
			}
			defer st.Close()
			e, ok := st.Get(args[1])
			if !ok {
				return fmt.Errorf("%s: no key %q", args[0], args[1])
			}
			_, err = g.stdout.Write(e.Value)
			return err
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
			if c := runtime.StateClient(g.root, args[0]); c != nil {
				return c.Put(cmd.Context(), args[1], value)
			}
			st, err := runtime.OpenState(stateRoot(), args[0])
			if err != nil {
				return err
			}
			defer st.Close()
			_, err = st.Put(cmd.Context(), "tori-run", args[1], value)
			return err
		},
	}
	ls := &cobra.Command{
		Use: "ls NAME [PREFIX]", Short: "List keys", Args: usageArgs(cobra.RangeArgs(1, 2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			prefix := ""
			if len(args) == 2 {
				prefix = args[1]
			}
			var keys []string
			if c := runtime.StateClient(g.root, args[0]); c != nil {
				var err error
				if keys, err = c.List(cmd.Context(), prefix); err != nil {
					return err
				}
			} else {
				st, err := runtime.OpenState(stateRoot(), args[0])
				if err != nil {
					return err
				}
				defer st.Close()
				keys = st.List(prefix)
			}
			if len(keys) > 0 {
				fmt.Fprintln(g.stdout, strings.Join(keys, "\n"))
			}
			return nil
		},
	}
	var format, output string
	export := &cobra.Command{
		Use: "export NAME [--format parquet|jsonl] [-o FILE]", Short: "Write a capsule's state as one compacted Parquet file or JSON lines",
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "parquet" && format != "jsonl" {
				return usagef("export: --format %q: expected parquet or jsonl", format)
			}
			if format == "parquet" && output == "" {
				return usagef("export: Parquet is binary: give -o FILE")
			}
			var buf bytes.Buffer
			if c := runtime.StateClient(g.root, args[0]); c != nil {
				if err := c.Export(cmd.Context(), &buf, format); err != nil {
					return err
				}
			} else {
				st, err := runtime.OpenState(stateRoot(), args[0])
				if err != nil {
					return err
				}
				defer st.Close()
				if err := runtime.ExportState(st, &buf, format); err != nil {
					return err
				}
			}
			if output == "" {
				_, err := g.stdout.Write(buf.Bytes())
				return err
			}
			return os.WriteFile(output, buf.Bytes(), 0o644)
		},
	}
	export.Flags().StringVar(&format, "format", "jsonl", "parquet or jsonl")
	export.Flags().StringVarP(&output, "output", "o", "", "write to FILE instead of standard output")
	state.AddCommand(get, put, ls, export)
	return state
}
