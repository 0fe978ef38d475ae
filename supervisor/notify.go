package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// notifyMsg is one sd_notify datagram, with its sender's pid as the
// kernel reports it (SCM_CREDENTIALS, translated into our PID namespace;
// 0 when it did not say).
type notifyMsg struct {
	pid       int
	ready     bool
	status    string
	hasStatus bool
}

// notifySocket is a service's NOTIFY_SOCKET: a unixgram socket with
// SO_PASSCRED, so that every datagram carries its sender's credentials.
type notifySocket struct {
	path string
	conn *net.UnixConn
	msgs chan notifyMsg
}

// maxSocketPath is sun_path's size less the terminating NUL.
const maxSocketPath = 107

func listenNotify(path string) (*notifySocket, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("notify socket %s: the path is %d bytes, a unix socket allows %d; choose a shorter Options.NotifyDir", path, len(path), maxSocketPath)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("notify socket: removing a stale %s: %w", path, err)
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	raw, err := conn.SyscallConn()
	if err == nil {
		cerr := raw.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		})
		err = errors.Join(cerr, err)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket %s: SO_PASSCRED: %w", path, err)
	}
	// A service may run as another user; who may speak is decided by the
	// sender's pid, checked on every message, not by the file's mode.
	if err := chmodSocket(path, 0o666); err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	n := &notifySocket{path: path, conn: conn, msgs: make(chan notifyMsg, 16)}
	go n.read()
	return n, nil
}

// read receives datagrams until the socket is closed. A message that finds
// the channel full is dropped: the service loop is not listening (backing
// off), and the next process will say READY=1 again.
func (n *notifySocket) read() {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		nb, noob, _, _, err := n.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				close(n.msgs)
				return
			}
			continue
		}
		m := parseNotify(buf[:nb])
		m.pid = credPid(oob[:noob])
		select {
		case n.msgs <- m:
		default:
		}
	}
}

func (n *notifySocket) close() {
	n.conn.Close()
	_ = os.Remove(n.path)
}

func credPid(oob []byte) int {
	cms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for i := range cms {
		if c, err := unix.ParseUnixCredentials(&cms[i]); err == nil {
			return int(c.Pid)
		}
	}
	return 0
}

// parseNotify reads the newline-separated KEY=VALUE assignments of the
// sd_notify protocol; unknown keys are ignored.
func parseNotify(b []byte) notifyMsg {
	var m notifyMsg
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		k, v, ok := bytes.Cut(line, []byte{'='})
		if !ok {
			continue
		}
		switch string(k) {
		case "READY":
			m.ready = string(v) == "1"
		case "STATUS":
			m.status, m.hasStatus = string(v), true
		}
	}
	return m
}

// chmodSocket changes the mode of the socket file at path without following
// a symlink: os.Chmod would follow one planted in its place after bind (and
// make, say, /etc/shadow 0666). The file is opened O_PATH|O_NOFOLLOW, must
// be a socket, and is changed through its /proc/self/fd link, which names
// that very inode.
func chmodSocket(path string, mode uint32) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return &os.PathError{Op: "fstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s is no longer the socket just made (mode %#o): refusing to change it", path, st.Mode)
	}
	if err := unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), mode); err != nil {
		return &os.PathError{Op: "chmod", Path: path, Err: err}
	}
	return nil
}
