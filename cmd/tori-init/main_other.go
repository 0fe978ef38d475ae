//go:build !linux

// Command tori-init is tori-run's capsule init; capsules run on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "tori-init: capsules run on Linux only")
	os.Exit(2)
}
