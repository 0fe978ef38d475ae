//go:build linux

package specs

import (
	"testing"

	"golang.org/x/sys/unix"
)

// The table used on Windows and macOS agrees with the Linux kernel's.
func TestSignalTableMatchesLinux(t *testing.T) {
	for name, n := range map[string]int{"SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGKILL": 9, "SIGUSR1": 10, "SIGUSR2": 12, "SIGTERM": 15, "SIGCHLD": 17, "SIGCONT": 18, "SIGSTOP": 19, "SIGWINCH": 28, "SIGPWR": 30, "SIGSYS": 31} {
		if got := int(unix.SignalNum(name)); got != n {
			t.Errorf("%s is %d on this kernel, %d in the table of signal_other.go", name, got, n)
		}
	}
}
