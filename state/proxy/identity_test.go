package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/state"
)

// connectorScript connects to the socket argv[1], hands the connection to
// its parent over fd 3, and exits when the parent writes a byte there.
const connectorScript = `
import array, socket, sys
ctl = socket.socket(fileno=3)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
ctl.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [s.fileno()]))])
ctl.recv(1)
`

// connector starts a process that connects to sock and returns the
// connection it made (passed to us) and the way to make it exit. The
// process is published in *who (and known closed) before it can connect.
func connector(t *testing.T, sock string, who *atomic.Pointer[exec.Cmd], known, passed chan struct{}) (net.Conn, func()) {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 is not installed: no second process to connect")
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "ctl"), os.NewFile(uintptr(fds[1]), "ctl-child")
	t.Cleanup(func() { ours.Close() })
	cmd := exec.Command(py, "-c", connectorScript, sock)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	theirs.Close()
	who.Store(cmd)
	close(known)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(ours.Fd()), buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("no fd from the connector: %v", err)
	}
	got, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(got) != 1 {
		t.Fatalf("no fd from the connector: %v", err)
	}
	if passed != nil {
		close(passed)
	}
	f := os.NewFile(uintptr(got[0]), "conn")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, func() { _, _ = ours.Write([]byte{1}); _ = cmd.Wait() }
}

func put(t *testing.T, c net.Conn, key string) (int, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "PUT /v1/kv/%s HTTP/1.1\r\nHost: state\r\nContent-Length: 1\r\n\r\nv", key)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// isChild waits until the connector is known and says whether pid is it.
func isChild(pid int32, who *atomic.Pointer[exec.Cmd], known chan struct{}) bool {
	<-known
	c := who.Load()
	return c != nil && int32(c.Process.Pid) == pid
}

// TestIdentityOutlivesPidReuse: a connection whose process has exited,
// and whose pid now "belongs" to another service, still speaks as the
// service that opened it: the identity was taken from a pidfd at accept,
// never from the pid number later.
func TestIdentityOutlivesPidReuse(t *testing.T) {
	var who atomic.Pointer[exec.Cmd]
	known := make(chan struct{})
	var reused atomic.Bool
	identified := make(chan struct{}, 1)
	self := int32(os.Getpid())
	h := startProxy(t, state.Options{}, Options{Identify: func(pid int32) (string, error) {
		switch {
		case pid == self:
			return "child", nil // we write on the child's connection: of its service, as its parent would be
		case !isChild(pid, &who, known):
			return "", fmt.Errorf("pid %d unknown", pid)
		case reused.Load():
			return "other", nil // the pid now belongs to another service
		}
		identified <- struct{}{}
		return "child", nil
	}})
	c, exit := connector(t, h.sock, &who, known, nil)
	// Once the connection is accepted (and identified), the connector exits
	// and its pid is "reused".
	select {
	case <-identified:
	case <-time.After(30 * time.Second):
		t.Fatal("the connection was never accepted")
	}
	exit()
	reused.Store(true)
	if code, body := put(t, c, "k"); code/100 != 2 {
		t.Fatalf("PUT on the connection of an exited process: %d %s", code, body)
	}
	if e, ok := h.store.Get("k"); !ok || e.Service != "child" {
		t.Errorf("k = %+v %v: want written by child, the service that connected", e, ok)
	}
}

// TestPeerExitingDuringIdentifyIsRefused: if the process that connected is
// gone by the end of Identify, what Identify read may have been another
// process's (its pid reused): the connection is refused, and the 403 names
// no pid.
func TestPeerExitingDuringIdentifyIsRefused(t *testing.T) {
	var who atomic.Pointer[exec.Cmd]
	known, passed := make(chan struct{}), make(chan struct{})
	h := startProxy(t, state.Options{}, Options{Identify: func(pid int32) (string, error) {
		if !isChild(pid, &who, known) {
			return "", fmt.Errorf("pid %d unknown", pid)
		}
		// The process dies and is reaped while it is being identified
		// (once it has passed the connection on).
		<-passed
		c := who.Load()
		_ = c.Process.Kill()
		_ = c.Wait()
		return "child", nil
	}})
	c, _ := connector(t, h.sock, &who, known, passed)
	code, body := put(t, c, "k")
	if code != http.StatusForbidden || !strings.Contains(body, "exited") {
		t.Fatalf("PUT from a process that exited while identified: %d %s, want 403", code, body)
	}
	if regexp.MustCompile(`\d{2,}`).MatchString(body) {
		t.Errorf("the 403 names a number (a host pid?): %s", body)
	}
	if _, ok := h.store.Get("k"); ok {
		t.Error("the refused connection wrote")
	}
}

// TestStolenConnectionIsRefused: a connection opened by a process of one
// service and written on by a process of another (it took the fd) does not
// speak as the first: the write is refused and nothing is stored.
func TestStolenConnectionIsRefused(t *testing.T) {
	var who atomic.Pointer[exec.Cmd]
	known := make(chan struct{})
	self := int32(os.Getpid())
	h := startProxy(t, state.Options{}, Options{Identify: func(pid int32) (string, error) {
		switch {
		case pid == self:
			return "thief", nil
		case isChild(pid, &who, known):
			return "victim", nil
		}
		return "", fmt.Errorf("pid %d unknown", pid)
	}})
	c, _ := connector(t, h.sock, &who, known, nil)
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "PUT /v1/kv/k HTTP/1.1\r\nHost: state\r\nContent-Length: 1\r\n\r\nv")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			t.Errorf("a stolen connection was served: %s", resp.Status)
		}
	}
	if e, ok := h.store.Get("k"); ok {
		t.Errorf("a stolen connection wrote as %s", e.Service)
	}
	// The same service's own processes may share a connection (a child that
	// inherited it): that is TestIdentityOutlivesPidReuse.
}
