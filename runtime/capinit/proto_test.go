//go:build linux

package capinit

import (
	"net"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func seqpacketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "seqpacket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// TestReadMsgSizedToPacket: a request bigger than any fixed small buffer,
// with files, arrives whole with its files; one over the limit is refused;
// a closed peer is an error, not an empty request.
func TestReadMsgSizedToPacket(t *testing.T) {
	a, b := seqpacketPair(t)
	env := []string{"BIG=" + strings.Repeat("x", 10<<10)}
	if err := WriteMsg(a, Request{Op: OpStart, Service: "s", Args: []string{"/bin/true"}, Env: env}, []int{0, 1}); err != nil {
		t.Fatal(err)
	}
	var req Request
	files, err := ReadMsg(b, &req)
	CloseFiles(files)
	if err != nil || req.Service != "s" || len(req.Env) != 1 || req.Env[0] != env[0] || len(files) != 2 {
		t.Fatalf("ReadMsg: %v, service %q, %d env, %d files; want the whole request and 2 files", err, req.Service, len(req.Env), len(files))
	}
	if err := WriteMsg(a, Request{Op: OpStart, Env: env}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadMsgN(b, &req, MaxAnswer); err == nil {
		t.Error("a packet over the limit was taken")
	}
	a.Close()
	if _, err := ReadMsg(b, &req); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("closed peer: %v, want connection closed", err)
	}
}
