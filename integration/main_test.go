package integration

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/tori-run/tori-run/runtime"
)

// The test binary is also the capsules' init (it is bound into them as
// /.tori/tori-run) and their workloads: "workload NAME ARGS" runs one.
// MaybeInit runs from init: only there is the main goroutine sure to be on
// the process's main thread, which it must keep for the whole run.
func init() {
	runtime.MaybeInit()
	if len(os.Args) > 2 && os.Args[1] == "workload" {
		os.Exit(workload(os.Args[2], os.Args[3:]))
	}
}

func workload(name string, args []string) int {
	n := 0
	if len(args) > 0 {
		n, _ = strconv.Atoi(args[0])
	}
	switch name {
	case "alloc": // touch n MiB, then wait
		var keep [][]byte
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
		}
		fmt.Printf("allocated %d MiB\n", len(keep))
		time.Sleep(time.Hour)
	case "forks": // start n sleeping children, report how many the kernel allowed
		ok, firstErr := 0, ""
		for i := 0; i < n; i++ {
			_, err := syscall.ForkExec("/.tori/tori-run", []string{"tori-run", "workload", "sleep", "60"}, &syscall.ProcAttr{})
			if err != nil {
				firstErr = err.Error()
				break
			}
			ok++
		}
		fmt.Printf("forked %d of %d; first error: %s\n", ok, n, firstErr)
		time.Sleep(time.Hour)
	case "spin": // burn CPU for n ms
		end := time.Now().Add(time.Duration(n) * time.Millisecond)
		x := 0
		for time.Now().Before(end) {
			x++
		}
		fmt.Println("spun", x > 0)
	case "escape": // try every escape of escape_test.go, print each outcome
		return escape()
	case "as-user": // print the uid, read /app, reach the state socket
		return asUser()
	case "exit": // exit with status n
		return n
	case "dial": // connect to the Unix socket args[0]
		return dial(args[0])
	case "listen-env": // report the sockets passed
		return listenEnv()
	case "serve": // a web service on a socket tori-run passes
		return serve(args[0])
	case "control-status": // GET /v1/status on the control socket args[0]
		return controlStatus(args[0])
	case "daemon": // tori-run daemon: root, run dir, socket
		return daemonMain(args[0], args[1], args[2])
	case "metrics-daemon": // tori-run daemon: root, run dir, socket, metrics address
		return metricsDaemonMain(args[0], args[1], args[2], args[3])
	case "ready-after": // wait n ms, then create /tmp/db-ready and sleep
		time.Sleep(time.Duration(n) * time.Millisecond)
		_ = os.WriteFile("/tmp/db-ready", nil, 0o644)
		time.Sleep(time.Hour)
	case "exists": // exit 0 if args[0] exists, else 1
		if _, err := os.Stat(args[0]); err != nil {
			return 1
		}
	case "confine": // attacks on tori-run's own walls (confine_init_test.go)
		return confineWorkload(args)
	case "sleep":
		time.Sleep(time.Duration(n) * time.Second)
	case "write": // write a file in /app and report whether other folders are writable
		err := os.WriteFile("/app/written-by-service", []byte("x"), 0o644)
		fmt.Printf("app write: %v\n", err)
		fmt.Printf("usr write: %v\n", os.WriteFile("/usr/tori-test", []byte("x"), 0o644))
		fmt.Printf("hostname: %s\n", hostname())
		time.Sleep(time.Hour)
	case "ignore-term": // a tree that ignores SIGTERM; /tmp/tree-started once it is whole
		signalIgnore()
		for i := 0; i < 3; i++ {
			_, _ = syscall.ForkExec("/.tori/tori-run", []string{"tori-run", "workload", "ignore-term-leaf"}, &syscall.ProcAttr{})
		}
		fmt.Println("tree started")
		_ = os.WriteFile("/tmp/tree-started", nil, 0o644)
		time.Sleep(time.Hour)
	case "ignore-term-leaf":
		signalIgnore()
		time.Sleep(time.Hour)
	default:
		fmt.Fprintf(os.Stderr, "unknown workload %q\n", name)
		return 2
	}
	return 0
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
