package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// A console follows the guest's serial output: it passes every line through with a prefix that says
// where it came from (the kernel or /init, validate, or a package's tests) and records the markers /init
// prints: boot, the exit status of each test binary, done.
type console struct {
	marker string
	pkgs   []testPkg
	out    io.Writer
	now    func() time.Time

	booted     bool
	done       bool
	fatal      string
	validate   bool // between validate-begin and validate-end
	cur        int  // index of the running package, or -1
	started    map[int]time.Time
	exits      map[int]int
	took       map[int]time.Duration
	lastOutput time.Time
}

func newConsole(marker string, pkgs []testPkg, out io.Writer) *console {
	return &console{marker: marker, pkgs: pkgs, out: out, now: time.Now, cur: -1,
		started: map[int]time.Time{}, exits: map[int]int{}, took: map[int]time.Duration{}}
}

func (c *console) prefix() string {
	switch {
	case c.cur >= 0:
		return "vm " + c.pkgs[c.cur].Short + " | "
	case c.validate:
		return "vm validate | "
	}
	return "vm | "
}

// line handles one line of serial output (without its line end).
func (c *console) line(s string) {
	s = strings.TrimRight(s, "\r")
	c.lastOutput = c.now()
	i := strings.Index(s, c.marker)
	if i < 0 {
		fmt.Fprintf(c.out, "%s%s\n", c.prefix(), s)
		return
	}
	if before := s[:i]; strings.TrimSpace(before) != "" { // output without a final newline
		fmt.Fprintf(c.out, "%s%s\n", c.prefix(), before)
	}
	f := strings.Fields(s[i+len(c.marker):])
	if len(f) == 0 {
		return
	}
	rest := strings.Join(f[1:], " ")
	switch f[0] {
	case "boot":
		c.booted = true
		fmt.Fprintf(c.out, "vm | /init running after %s\n", rest)
	case "fatal":
		c.fatal = rest
		fmt.Fprintf(c.out, "vm | FATAL in /init: %s\n", rest)
	case "validate-begin":
		fmt.Fprintf(c.out, "vm | %s validate --host --json:\n", guestToriRun)
		c.validate = true
	case "validate-end":
		c.validate = false
		fmt.Fprintf(c.out, "vm | validate --host exited %s\n", rest)
	case "start":
		if n, ok := c.index(f); ok {
			c.cur = n
			c.started[n] = c.now()
			fmt.Fprintf(c.out, "vm | === %s (%s)\n", c.pkgs[n].Short, c.pkgs[n].ImportPath)
		}
	case "exit":
		n, ok := c.index(f)
		if !ok || len(f) < 3 {
			return
		}
		rc, err := strconv.Atoi(f[2])
		if err != nil {
			return
		}
		c.exits[n] = rc
		c.took[n] = c.now().Sub(c.started[n])
		c.cur = -1
		fmt.Fprintf(c.out, "vm | === %s exited %d after %s\n", c.pkgs[n].Short, rc, c.took[n].Round(time.Millisecond))
	case "done":
		c.done = true
		fmt.Fprintf(c.out, "vm | all tests ran; guest uptime %s\n", rest)
	}
}

func (c *console) index(f []string) (int, bool) {
	if len(f) < 2 {
		return 0, false
	}
	n, err := strconv.Atoi(f[1])
	return n, err == nil && n >= 0 && n < len(c.pkgs)
}

// summary prints one line per package, as go test does, and reports whether everything passed.
func (c *console) summary(w io.Writer, noTests []string, why string) bool {
	ok := c.done && c.fatal == ""
	if why == "" {
		why = "no exit status from the guest"
	}
	for i, p := range c.pkgs {
		rc, ran := c.exits[i]
		switch {
		case ran && rc == 0:
			fmt.Fprintf(w, "ok  \t%s\t%.3fs (guest)\n", p.ImportPath, c.took[i].Seconds())
		case ran:
			fmt.Fprintf(w, "FAIL\t%s\t%.3fs (guest; exit status %d)\n", p.ImportPath, c.took[i].Seconds(), rc)
			ok = false
		case c.cur == i:
			fmt.Fprintf(w, "FAIL\t%s (guest; did not finish: %s)\n", p.ImportPath, why)
			ok = false
		default:
			fmt.Fprintf(w, "FAIL\t%s (guest; never ran: %s)\n", p.ImportPath, why)
			ok = false
		}
	}
	for _, p := range noTests {
		fmt.Fprintf(w, "?   \t%s\t[no test files]\n", p)
	}
	return ok
}
