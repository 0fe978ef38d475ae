// Command tori-run builds, installs, runs and supervises capsules.
//
// This package only parses flags and calls package runtime; see README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tori-run/tori-run/runtime"
)

// Exit codes, as SPEC §2 sets them.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func init() {
	// Before anything else: this binary is also libcontainer's bootstrap and
	// the capsules' init.
	runtime.MaybeInit()
}

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr *os.File) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd(stdout, stderr)
	root.SetArgs(aliasArgs(filepath.Base(args[0]), args[1:]))
	err := root.ExecuteContext(ctx)
	var ue usageError
	var ex exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ex):
		// The command already said what happened.
		return ex.code
	case errors.As(err, &ue), isCobraUsage(err):
		fmt.Fprintf(stderr, "tori-run: %v\nSee 'tori-run --help'.\n", err)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "tori-run: %v\n", err)
		return exitFailure
	}
}

// aliasArgs maps the seed's tool names onto tori-run's commands:
// `capsbuild ARGS` is `tori-run build ARGS`, and `capsdeploy CMD ARGS` is
// `tori-run CMD ARGS`.
func aliasArgs(name string, args []string) []string {
	// On Windows the program is capsbuild.exe (or CAPSBUILD.EXE).
	if strings.EqualFold(filepath.Ext(name), ".exe") {
		name = strings.ToLower(strings.TrimSuffix(name, filepath.Ext(name)))
	}
	switch name {
	case "capsbuild":
		return append([]string{"build"}, args...)
	default: // tori-run, capsdeploy
		return args
	}
}

// isCobraUsage spots cobra's own usage errors, which it does not type.
func isCobraUsage(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}

// usageError is a mistake in how the command was called: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// exitError ends the command with a status after it has printed its own
// report (validate's findings, for example).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
