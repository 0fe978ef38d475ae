//go:build linux

// Package listeners holds a capsule's listening sockets (sockets: in the
// manifest): opened once on the host before any service starts, shared by
// the instances of an upgrade (a duplicate of the very same socket), kept
// by the capsule's init across a daemon restart and handed back, and given
// to services the systemd way (LISTEN_FDS, LISTEN_FDNAMES).
package listeners

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/specs"
)

// Set is a capsule's set of listening sockets, in manifest order.
type Set struct {
	socks []heldSocket
}

type heldSocket struct {
	spec     specs.Socket
	file     *os.File
	hostPath string // unix: where the socket file is on the host
}

// HostPath is where a capsule's unix socket lives on the host.
func HostPath(runDir, capsule, name string) string {
	return layout.Layout{RunDir: runDir}.Socket(capsule, name)
}

// Open opens every socket the manifest declares. A port in use or
// a path that cannot be bound is an error naming the socket; nothing stays
// open on error.
func Open(m *specs.Manifest, runDir string) (*Set, error) {
	return (*Set)(nil).Derive(m, runDir)
}

// Derive makes the set for manifest m: sockets l already holds with the same
// address are shared (a duplicate of the same open socket), the others are
// opened. l may be nil.
func (l *Set) Derive(m *specs.Manifest, runDir string) (_ *Set, err error) {
	out := &Set{}
	defer func() {
		if err != nil {
			out.Close()
		}
	}()
	for _, s := range m.Sockets {
		h := heldSocket{spec: s}
		if s.Network == specs.SocketUnix {
			h.hostPath = HostPath(runDir, m.Name, s.Name)
		}
		if prev := l.find(s); prev != nil {
			fd, err := unix.FcntlInt(prev.file.Fd(), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				return nil, fmt.Errorf("socket %s (%s): %w", s.Name, s.Listen(), err)
			}
			h.file, h.hostPath = os.NewFile(uintptr(fd), s.Name), prev.hostPath
		} else if h.file, err = listenSocket(s, h.hostPath); err != nil {
			return nil, err
		}
		out.socks = append(out.socks, h)
	}
	return out, nil
}

func (l *Set) find(s specs.Socket) *heldSocket {
	if l == nil {
		return nil
	}
	for i := range l.socks {
		if l.socks[i].spec.Network == s.Network && l.socks[i].spec.Address == s.Address {
			return &l.socks[i]
		}
	}
	return nil
}

// listenSocket opens one socket. tcp6 sockets are IPv6-only, as the
// address asks.
func listenSocket(s specs.Socket, hostPath string) (*os.File, error) {
	var (
		ln  net.Listener
		err error
	)
	switch s.Network {
	case specs.SocketUnix:
		if err := os.MkdirAll(filepath.Dir(hostPath), 0o755); err != nil {
			return nil, fmt.Errorf("socket %s: %w", s.Name, err)
		}
		// A file left by a tori-run that died is not a listening socket
		// any more: nothing answers it, so it is replaced.
		if c, derr := net.Dial("unix", hostPath); derr == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s (%s): %s is in use by another process", s.Name, s.Listen(), hostPath)
		}
		_ = os.Remove(hostPath)
		ln, err = net.Listen("unix", hostPath)
		if ul, ok := ln.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false) // the path is removed with the capsule
		}
	default:
		ln, err = net.Listen(s.Network, s.Address)
	}
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("socket %s: %s is already in use by another process (ss -ltnp shows which); free it or change sockets.%s.listen", s.Name, s.Listen(), s.Name)
		}
		if errors.Is(err, syscall.EACCES) && s.Network != specs.SocketUnix && os.Geteuid() != 0 {
			start, _ := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
			return nil, fmt.Errorf("socket %s (%s): %w: without root, ports below /proc/sys/net/ipv4/ip_unprivileged_port_start (%s) cannot be bound; use a higher port, or as root: sysctl -w net.ipv4.ip_unprivileged_port_start=%s",
				s.Name, s.Listen(), err, strings.TrimSpace(string(start)), portOf(s.Address))
		}
		return nil, fmt.Errorf("socket %s (%s): %w", s.Name, s.Listen(), err)
	}
	defer ln.Close()
	// Not ln.File(): that *os.File puts the socket back into blocking mode
	// each time its Fd is read, and O_NONBLOCK belongs to the open file
	// description, which every service shares. A service that had made it
	// non-blocking (Go's net.FileListener does) would then block in
	// accept(2) where it expects EAGAIN, and could no longer stop. The
	// socket is handed over blocking, as systemd does, and tori-run never
	// touches its flags again (os.NewFile of a blocking descriptor does not).
	raw, err := ln.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", s.Name, err)
	}
	fd := -1
	cerr := raw.Control(func(sfd uintptr) {
		fd, err = unix.FcntlInt(sfd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil || err != nil {
		return nil, fmt.Errorf("socket %s: %w", s.Name, errors.Join(cerr, err))
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("socket %s: %w", s.Name, err)
	}
	return os.NewFile(uintptr(fd), s.Name), nil
}

// Files returns the sockets of these names (a service's: plan.Service's
// Sockets), in that order.
func (l *Set) Files(names []string) []*os.File {
	if l == nil {
		return nil
	}
	var files []*os.File
	for _, n := range names {
		for _, h := range l.socks {
			if h.spec.Name == n {
				files = append(files, h.file)
				break
			}
		}
	}
	return files
}

// All returns every socket and its name.
func (l *Set) All() ([]*os.File, []string) {
	if l == nil {
		return nil, nil
	}
	var files []*os.File
	var names []string
	for _, h := range l.socks {
		files, names = append(files, h.file), append(names, h.spec.Name)
	}
	return files, names
}

// Addrs are the sockets' addresses as the kernel has them (a declared port
// 0 shows the port chosen), by name.
func (l *Set) Addrs() map[string]string {
	out := map[string]string{}
	if l == nil {
		return out
	}
	for _, h := range l.socks {
		sa, err := unix.Getsockname(int(h.file.Fd()))
		if err != nil {
			continue
		}
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			out[h.spec.Name] = net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
		case *unix.SockaddrInet6:
			out[h.spec.Name] = net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
		case *unix.SockaddrUnix:
			out[h.spec.Name] = h.hostPath
		}
	}
	return out
}

// Mounts are the unix sockets to bind into the capsule: host path ->
// capsule path.
func (l *Set) Mounts() [][2]string {
	if l == nil {
		return nil
	}
	var out [][2]string
	for _, h := range l.socks {
		if h.spec.Network == specs.SocketUnix {
			out = append(out, [2]string{h.hostPath, h.spec.Address})
		}
	}
	return out
}

// Close closes this set's descriptors. A socket another set shares stays
// open there.
func (l *Set) Close() {
	if l == nil {
		return
	}
	for _, h := range l.socks {
		if h.file != nil {
			_ = h.file.Close()
		}
	}
	l.socks = nil
}

// RemovePaths removes the unix socket files: once the capsule is gone.
func (l *Set) RemovePaths() {
	if l == nil {
		return
	}
	for _, h := range l.socks {
		if h.hostPath != "" {
			_ = os.Remove(h.hostPath)
		}
	}
}

// FromHeld rebuilds the set of manifest m from files the capsule's init
// kept (re-adoption), matched by name. A socket the init did not hand back
// is opened anew.
func FromHeld(m *specs.Manifest, runDir string, files []*os.File, names []string) (*Set, error) {
	held := &Set{}
	for i, f := range files {
		if i >= len(names) {
			_ = f.Close()
			continue
		}
		s := specs.Socket{Name: names[i]}
		for _, ms := range m.Sockets {
			if ms.Name == names[i] {
				s = ms
			}
		}
		h := heldSocket{spec: s, file: f}
		if s.Network == specs.SocketUnix {
			h.hostPath = HostPath(runDir, m.Name, s.Name)
		}
		held.socks = append(held.socks, h)
	}
	out, err := held.Derive(m, runDir)
	held.Close()
	return out, err
}

// Env is the systemd socket-activation environment for names (the
// init adds LISTEN_PID once the service's pid is known).
func Env(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	return []string{"LISTEN_FDS=" + strconv.Itoa(len(names)), "LISTEN_FDNAMES=" + strings.Join(names, ":")}
}

// RemoveDropped removes the unix socket files l holds that next does not
// (the capsule's sockets after a switch to another release).
func (l *Set) RemoveDropped(next *Set) {
	if l == nil {
		return
	}
	for _, h := range l.socks {
		if next.find(h.spec) == nil && h.hostPath != "" {
			_ = os.Remove(h.hostPath)
		}
	}
}

// Len is how many sockets the set holds (0 for nil).
func (l *Set) Len() int {
	if l == nil {
		return 0
	}
	return len(l.socks)
}

// portOf is the port of a host:port address ("" when it has none).
func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
