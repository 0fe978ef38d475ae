package specs

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// signalNum is the number of a signal name (SIGTERM) on this kernel; 0 if
// there is none.
func signalNum(name string) syscall.Signal { return unix.SignalNum(name) }
