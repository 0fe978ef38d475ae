package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Listen creates a Unix socket at path, replacing a stale one left by a
// crashed proxy, readable and writable by everyone: who may call is decided
// by where the socket is bound (into one capsule, from a folder the capsule
// cannot write) and by Identify. The mode is set without following a
// symlink, so one planted at path after bind changes nothing.
func Listen(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale state socket: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on state socket %s: %w", path, err)
	}
	if err := chmodSocket(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod state socket: %w", err)
	}
	return l, nil
}

// chmodSocket changes the mode of the socket file at path through an
// O_PATH|O_NOFOLLOW fd checked to be a socket (os.Chmod follows symlinks).
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

// peer is who is at the other end of a connection: the service its process
// belongs to, resolved once, when the connection is accepted, from a pidfd
// of that process (identifyPeer). The identity is the connection's for its
// whole life: a pid number is never looked at again, so a pid reused later
// by another service's process changes nothing.
type peer struct {
	service string
	err     error // shown to the caller: never a host pid
	pid     int32 // for the host's log only
}

type peerKey struct{}

func peerFrom(ctx context.Context) *peer {
	p, _ := ctx.Value(peerKey{}).(*peer)
	return p
}

// credConn is an accepted connection with its peer.
//
// Its reads also check who WROTE the bytes: with SO_PASSCRED the kernel
// tags every write on a Unix stream with the writer's pid and never merges
// two writers' data in one read, so a connection fd taken by a process of
// another service (inherited, passed, pidfd_getfd) cannot speak as the
// service that opened it: data from a process that is not of that service
// ends the connection. The opener's own writes cost no lookup; another
// process of the same service (a child that inherited the fd) is looked up
// once.
type credConn struct {
	net.Conn
	peer     *peer
	raw      syscall.RawConn // nil: reads are not checked (admin socket, unknown peer)
	identify func(int32) (string, error)
	oob      []byte
	writers  map[int32]bool // other pids seen writing, found of peer.service
	tagged   bool           // a read carried its writer's pid: untagged data is refused from then on
	release  func()
	once     sync.Once
}

func (c *credConn) Read(b []byte) (int, error) {
	if c.raw == nil {
		return c.Conn.Read(b)
	}
	var n, oobn int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), b, c.oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, err
	}
	writer := int32(-1)
	if msgs, err := unix.ParseSocketControlMessage(c.oob[:oobn]); err == nil {
		for i := range msgs {
			if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
				writer = cred.Pid
			} else if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
				for _, fd := range fds {
					unix.Close(fd) // nobody sends the proxy fds
				}
			}
		}
	}
	if n == 0 {
		return 0, io.EOF
	}
	// Pid 0: the kernel recorded no writer for these bytes. That happens
	// only to data queued before the accepted socket had SO_PASSCRED (on
	// kernels that do not tag writes to a connection not yet accepted),
	// which only the opener's connect-and-write can be: accepted as its
	// until the first tagged read, never after.
	if writer == 0 && !c.tagged {
		return n, nil
	}
	c.tagged = true
	if writer != c.peer.pid && !c.writers[writer] {
		if err := c.checkWriter(writer); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// checkWriter accepts pid as a writer on the connection if it is a process
// of the connection's service, identified as at accept.
func (c *credConn) checkWriter(pid int32) error {
	refused := errors.New("state proxy: data on this connection was written by a process of another service than the one that opened it")
	if pid <= 0 {
		return refused
	}
	pidfd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		return refused
	}
	defer unix.Close(pidfd)
	svc, err := c.identify(pid)
	if err != nil || svc != c.peer.service || pidfdPid(pidfd) != int(pid) {
		return refused
	}
	if c.writers == nil {
		c.writers = map[int32]bool{}
	}
	c.writers[pid] = true
	return nil
}

func (c *credConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// credListener identifies each connection's peer as it accepts it and
// admits at most cap(sem) connections at once (like
// x/net/netutil.LimitListener, which cannot be used here: its connections
// hide the *net.UnixConn that SO_PEERPIDFD needs).
type credListener struct {
	net.Listener
	identify func(pid int32) (string, error)
	sem      chan struct{}
	done     chan struct{}
	once     sync.Once
}

// newCredListener wraps l. With identify, SO_PASSCRED is set on the
// listening socket itself: a connection is born with it (Linux 6.16+ copies
// it at connect; before, the kernel tags writes to a connection not yet
// accepted anyway), so even the bytes written before accept carry their
// writer's pid.
func newCredListener(l net.Listener, maxConns int, identify func(int32) (string, error)) (*credListener, error) {
	if ul, ok := l.(*net.UnixListener); ok && identify != nil {
		raw, err := ul.SyscallConn()
		if err != nil {
			return nil, err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		}); err != nil {
			return nil, err
		}
		if serr != nil {
			return nil, fmt.Errorf("state socket: SO_PASSCRED: %w", serr)
		}
	}
	return &credListener{Listener: l, identify: identify, sem: make(chan struct{}, maxConns), done: make(chan struct{})}, nil
}

func (l *credListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	cc := &credConn{Conn: c, peer: &peer{err: errors.New("not identified"), pid: -1}, release: func() { <-l.sem }}
	if l.identify == nil { // the admin socket, which asks nobody's identity
		return cc, nil
	}
	cc.peer = identifyPeer(c, l.identify)
	if uc, ok := c.(*net.UnixConn); ok && cc.peer.err == nil {
		if raw, err := uc.SyscallConn(); err == nil {
			var serr error
			if err := raw.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
			}); err == nil && serr == nil {
				cc.raw, cc.identify = raw, l.identify
				cc.oob = make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*8))
			} else {
				cc.peer = &peer{err: errors.New("SO_PASSCRED failed: the writers of this connection cannot be checked"), pid: cc.peer.pid}
			}
		}
	}
	return cc, nil
}

func (l *credListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// identifyPeer finds the service of the process that connected c.
//
// The process is held by a pidfd: SO_PEERPIDFD (Linux 6.5+) names the very
// process that called connect(), whatever happened to its pid number since;
// before 6.5, a pidfd opened on SO_PEERCRED's pid at once at accept (a pid
// reused between connect and accept could still fool that one; 6.5 closes
// it). The pid read from the pidfd is looked up (identify: its cgroup), and
// the pidfd must still name that pid afterwards: a pid cannot be given to
// another process before its holder is reaped, and a reaped one shows -1,
// so what identify read was the peer's.
func identifyPeer(c net.Conn, identify func(int32) (string, error)) *peer {
	p := &peer{pid: -1}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		p.err = errors.New("not a connection over a Unix socket")
		return p
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		p.err = fmt.Errorf("peer credentials: %w", err)
		return p
	}
	pidfd := -1
	var serr error
	if err := raw.Control(func(fd uintptr) {
		pidfd, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
		if serr == nil {
			return
		}
		var cred *unix.Ucred
		if cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); serr != nil {
			return
		}
		if cred.Pid <= 0 {
			serr = errors.New("the caller is outside the state proxy's PID namespace")
			return
		}
		pidfd, serr = unix.PidfdOpen(int(cred.Pid), 0)
	}); err != nil {
		serr = err
	}
	if serr != nil {
		p.err = fmt.Errorf("peer credentials: %w", noPid(serr))
		return p
	}
	defer unix.Close(pidfd)
	pid := pidfdPid(pidfd)
	if pid <= 0 {
		p.err = errors.New("the process that connected has exited or is outside the state proxy's PID namespace")
		return p
	}
	p.pid = int32(pid)
	p.service, p.err = identify(int32(pid))
	if p.err == nil && p.service == "" {
		p.err = errors.New("the caller belongs to no service")
	}
	if pidfdPid(pidfd) != pid {
		p.service, p.err = "", errors.New("the process that connected exited while it was identified")
	}
	return p
}

// noPid keeps an errno only: the messages built here reach the caller.
func noPid(err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// pidfdPid reads the pid of a pidfd's process in our PID namespace from its
// fdinfo: -1 once it has been reaped, 0 if outside our namespace.
func pidfdPid(pidfd int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fdinfo/%d", pidfd))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}
