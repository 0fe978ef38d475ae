// Command forkloop is the anchor of bench/supervise: the least a supervisor
// written in Go can do to restart a service, a bare fork/exec/wait loop with
// no policy, no logs, no container.
//
//	forkloop -n N -internal FILE PROGRAM ARGS...
//
// It runs PROGRAM N times back to back (stdin/stdout/stderr on /dev/null,
// as os/exec does) and writes to FILE, one per line, the nanoseconds from
// Wait returning (the exit seen) to the next Start returning (the
// replacement's exec succeeded): the counterpart of tori-run's exited ->
// started event times. The program itself (bench/supervise/stamp) records
// the common, external measure.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"time"
)

func main() {
	n := flag.Int("n", 300, "restarts")
	internal := flag.String("internal", "", "file for the wait-to-start gaps (ns), one per line")
	flag.Parse()
	if flag.NArg() < 1 {
		fmt.Fprintln(os.Stderr, "usage: forkloop -n N -internal FILE PROGRAM ARGS...")
		os.Exit(2)
	}
	var gaps []int64
	var exited time.Time
	for i := 0; i < *n; i++ {
		cmd := exec.Command(flag.Arg(0), flag.Args()[1:]...)
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "forkloop:", err)
			os.Exit(1)
		}
		if i > 0 {
			gaps = append(gaps, time.Since(exited).Nanoseconds())
		}
		_ = cmd.Wait() // the program exits with status 1 by design
		exited = time.Now()
	}
	if *internal == "" {
		return
	}
	f, err := os.Create(*internal)
	if err != nil {
		fmt.Fprintln(os.Stderr, "forkloop:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(f)
	for _, g := range gaps {
		fmt.Fprintln(w, g)
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "forkloop:", err)
		os.Exit(1)
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "forkloop:", err)
		os.Exit(1)
	}
}
