//go:build linux

// Command tori-init is tori-run's capsule init: PID 1 of every capsule
// and the trampoline to its services (runtime/capinit), as a small, static,
// pure-Go binary. tori-run embeds it when the Makefile builds it
// (runtime/initbin) and binds it into each capsule at /.tori/init, so that
// a capsule's start runs this binary's few package inits instead of all of
// tori-run's (docs/PERFORMANCE.md). It is not meant to be run by hand.
package main

import (
	"fmt"
	"os"

	"github.com/tori-run/tori-run/runtime/capinit"
)

func main() {
	if len(os.Args) >= 2 {
		switch os.Args[1] {
		case capinit.InitCommand:
			os.Exit(capinit.Run())
		case capinit.ExecCommand:
			os.Exit(capinit.Exec(os.Args[2:]))
		}
	}
	fmt.Fprintf(os.Stderr, "tori-init is the init of tori-run's capsules (PID 1 in a capsule: %s; a service's trampoline: %s), started by tori-run, not by hand\n", capinit.InitCommand, capinit.ExecCommand)
	os.Exit(2)
}
