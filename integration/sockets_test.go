package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tori-run/tori-run/runtime"
)

// listenEnv reports what socket activation gave the service.
func listenEnv() int {
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	pid, _ := strconv.Atoi(os.Getenv("LISTEN_PID"))
	fmt.Printf("fds=%d pid-matches=%v names=%s\n", n, pid == os.Getpid(), os.Getenv("LISTEN_FDNAMES"))
	for i := range n {
		l, err := net.FileListener(os.NewFile(uintptr(3+i), "socket"))
		if err != nil {
			fmt.Printf("fd %d: %v\n", 3+i, err)
			continue
		}
		fmt.Printf("fd %d: %s %s\n", 3+i, l.Addr().Network(), l.Addr())
		l.Close()
	}
	_, err := os.Stat("/run/ctl.sock")
	fmt.Printf("unix socket in the capsule: %v\n", err == nil)
	return 0
}

// TestSocketActivation: the declared sockets are opened once on the host
// and passed the systemd way (fds from 3, LISTEN_FDS, LISTEN_FDNAMES,
// LISTEN_PID = the service's pid as it sees it); a unix socket is at its
// declared path in the capsule and at SocketHostPath on the host; a
// service not named gets none; a port in use is a clear error.
func TestSocketActivation(t *testing.T) {
	requireRoot(t)
	o := options(t)
	inst := start(t, capsule(t, `services:
  web: {command: "`+wl+`listen-env"}
  other: {command: "`+wl+`listen-env"}
sockets:
  http: {listen: "tcp://127.0.0.1:0", service: web}
  ctl: {listen: "unix:///run/ctl.sock", service: web}
`), o)
	_, lines := service(t, inst, "web")
	if l := expectLine(t, lines, "fds="); l != "fds=2 pid-matches=true names=http:ctl" {
		t.Errorf("web: %q", l)
	}
	addr := inst.Sockets()["http"]
	if l := expectLine(t, lines, "fd 3:"); l != "fd 3: tcp "+addr {
		t.Errorf("fd 3 = %q, want tcp %s", l, addr)
	}
	host := runtime.SocketHostPath(o.RunDir, "itest", "ctl")
	if l := expectLine(t, lines, "fd 4:"); l != "fd 4: unix "+host {
		t.Errorf("fd 4 = %q, want unix %s", l, host)
	}
	if l := expectLine(t, lines, "unix socket in the capsule:"); !strings.HasSuffix(l, "true") {
		t.Errorf("%s", l)
	}
	// The host side can connect to both while no service accepts: the
	// kernel queues the connection on the held socket.
	for _, a := range [][2]string{{"tcp", addr}, {"unix", host}} {
		c, err := net.Dial(a[0], a[1])
		if err != nil {
			t.Errorf("dial %s %s: %v", a[0], a[1], err)
			continue
		}
		c.Close()
	}
	_, lines = service(t, inst, "other")
	if l := expectLine(t, lines, "fds="); l != "fds=0 pid-matches=false names=" {
		t.Errorf("other: %q", l)
	}
	// The same port again: refused before anything is made.
	tgt, err := runtime.Resolve(capsule(t, "services:\n  web: {command: \""+wl+"listen-env\"}\nsockets:\n  http: {listen: \"tcp://"+addr+"\"}\n"), o)
	if err != nil {
		t.Fatal(err)
	}
	o2 := o
	if _, err := runtime.Create(t.Context(), tgt, o2); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("a port in use: %v", err)
	}
	if dirs, _ := filepath.Glob(filepath.Join(o.Root, "instances", "*")); len(dirs) != 1 {
		t.Errorf("instances after the refused start: %v", dirs)
	}
}
