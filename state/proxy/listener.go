package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Listen creates a Unix socket at path, replacing a stale one left by a
// crashed proxy, readable and writable by everyone: who may call is decided
// by where the socket is bound (into one capsule) and by Identify.
func Listen(path string) (net.Listener, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale state socket: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on state socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod state socket: %w", err)
	}
	return l, nil
}

// peer is who is at the other end of a connection, from SO_PEERCRED at
// accept time. The service is resolved once, on the first request.
type peer struct {
	pid, uid int32
	credErr  error

	once    sync.Once
	service string
	err     error
}

type peerKey struct{}

func peerFrom(ctx context.Context) *peer {
	p, _ := ctx.Value(peerKey{}).(*peer)
	return p
}

// credConn is an accepted connection with its peer's credentials.
type credConn struct {
	net.Conn
	peer    *peer
	release func()
	once    sync.Once
}

func (c *credConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// credListener reads each connection's peer credentials as it accepts it
// and admits at most cap(sem) connections at once (like
// x/net/netutil.LimitListener, which cannot be used here: its connections
// hide the *net.UnixConn that SO_PEERCRED needs).
type credListener struct {
	net.Listener
	sem  chan struct{}
	done chan struct{}
	once sync.Once
}

func newCredListener(l net.Listener, maxConns int) *credListener {
	return &credListener{Listener: l, sem: make(chan struct{}, maxConns), done: make(chan struct{})}
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
	return &credConn{Conn: c, peer: peerCred(c), release: func() { <-l.sem }}, nil
}

func (l *credListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func peerCred(c net.Conn) *peer {
	p := &peer{pid: -1}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		p.credErr = fmt.Errorf("connection from %v is not over a Unix socket", c.RemoteAddr())
		return p
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		p.credErr = fmt.Errorf("peer credentials: %w", err)
		return p
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		credErr = err
	}
	if credErr != nil {
		p.credErr = fmt.Errorf("SO_PEERCRED: %w", credErr)
		return p
	}
	p.pid, p.uid = cred.Pid, int32(cred.Uid)
	return p
}
