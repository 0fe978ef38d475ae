//go:build linux

package listeners

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/specs"
)

func socketManifest(t *testing.T, sockets string) *specs.Manifest {
	t.Helper()
	m, err := specs.Parse(strings.NewReader("name: web\nversion: \"1.0.0\"\nentrypoint: /bin/web\nservices: [web, admin]\nsockets:\n"+sockets), "capsule.yml")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestListeners: sockets are opened once, handed over blocking, shared by
// duplicate (the same socket, not a second bind), and a port in use is an
// error that names the socket.
func TestListeners(t *testing.T) {
	run := t.TempDir()
	m := socketManifest(t, "  http: {listen: \"tcp://127.0.0.1:0\", service: web}\n  ctl: {listen: \"unix:///run/ctl.sock\"}\n")
	l, err := Open(m, run)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addrs := l.Addrs()
	if !strings.HasPrefix(addrs["http"], "127.0.0.1:") || addrs["ctl"] != HostPath(run, "web", "ctl") {
		t.Fatalf("addrs = %v", addrs)
	}
	for _, h := range l.socks {
		fl, err := unix.FcntlInt(h.file.Fd(), unix.F_GETFL, 0)
		if err != nil || fl&unix.O_NONBLOCK != 0 {
			t.Errorf("%s: flags %#x %v: want a blocking socket", h.spec.Name, fl, err)
		}
	}
	// A service's sockets by name (the plan's Service.Sockets), in that order.
	if files := l.Files([]string{"ctl", "http"}); len(files) != 2 || files[0] != l.socks[1].file || files[1] != l.socks[0].file {
		t.Errorf("Files(ctl, http) = %v", files)
	}
	// A derived set (the next release) shares the very same sockets.
	l2, err := l.Derive(m, run)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Addrs()["http"] != addrs["http"] {
		t.Errorf("derived %v, want %v", l2.Addrs(), addrs)
	}
	var st1, st2 unix.Stat_t
	_ = unix.Fstat(int(l.socks[0].file.Fd()), &st1)
	_ = unix.Fstat(int(l2.socks[0].file.Fd()), &st2)
	if st1.Ino != st2.Ino {
		t.Error("the derived set holds another socket, not the same one")
	}
	l2.Close()
	if c, err := net.Dial("tcp", addrs["http"]); err != nil {
		t.Errorf("closing a derived set closed the socket: %v", err)
	} else {
		c.Close()
	}
	// The same address again: in use.
	m2 := socketManifest(t, "  http: {listen: \"tcp://"+addrs["http"]+"\"}\n")
	if _, err := Open(m2, run); err == nil || !strings.Contains(err.Error(), "socket http: tcp://"+addrs["http"]+" is already in use") {
		t.Errorf("port in use: %v", err)
	}
	l.RemovePaths()
	if _, err := os.Stat(filepath.Join(run, "sockets", "web", "ctl.sock")); !os.IsNotExist(err) {
		t.Errorf("unix socket file left: %v", err)
	}
}

func TestListenEnv(t *testing.T) {
	if got := strings.Join(Env([]string{"http", "ctl"}), " "); got != "LISTEN_FDS=2 LISTEN_FDNAMES=http:ctl" {
		t.Errorf("listenEnv = %q", got)
	}
	if Env(nil) != nil {
		t.Error("no sockets, no variables")
	}
}
