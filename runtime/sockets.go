//go:build linux

package runtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tori-run/tori-run/runtime/capinit"
	"github.com/tori-run/tori-run/specs"
)

// A capsule's listening sockets (sockets: in the manifest) are opened once,
// on the host, before any service starts, and held by tori-run for the
// capsule's life: across service restarts, across an upgrade (the new
// release's instance gets the very same sockets, so no connection is
// refused while the old one stops) and across a daemon restart (the
// capsule's init keeps a copy and hands it back at re-adoption). Services
// get them the systemd way: fds from 3, LISTEN_FDS, LISTEN_FDNAMES and
// LISTEN_PID, the pid the service sees in the capsule's PID namespace.
//
// A unix socket lives on the host at <rundir>/sockets/<capsule>/<name>.sock
// and is bound into the capsule at its declared path.

// Listeners is a capsule's set of listening sockets, in manifest order.
type Listeners struct {
	socks []heldSocket
}

type heldSocket struct {
	spec     specs.Socket
	file     *os.File
	hostPath string // unix: where the socket file is on the host
}

// SocketHostPath is where a capsule's unix socket lives on the host.
func SocketHostPath(runDir, capsule, name string) string {
	return filepath.Join(runDir, "sockets", capsule, name+".sock")
}

// OpenListeners opens every socket the manifest declares. A port in use or
// a path that cannot be bound is an error naming the socket; nothing stays
// open on error.
func OpenListeners(m *specs.Manifest, runDir string) (*Listeners, error) {
	return (*Listeners)(nil).derive(m, runDir)
}

// derive makes the set for manifest m: sockets l already holds with the same
// address are shared (a duplicate of the same open socket), the others are
// opened. l may be nil.
func (l *Listeners) derive(m *specs.Manifest, runDir string) (_ *Listeners, err error) {
	out := &Listeners{}
	defer func() {
		if err != nil {
			out.Close()
		}
	}()
	for _, s := range m.Sockets {
		h := heldSocket{spec: s}
		if s.Network == specs.SocketUnix {
			h.hostPath = SocketHostPath(runDir, m.Name, s.Name)
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

func (l *Listeners) find(s specs.Socket) *heldSocket {
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

// forService returns the sockets a service receives and their names.
func (l *Listeners) forService(service string) ([]*os.File, []string) {
	if l == nil {
		return nil, nil
	}
	var files []*os.File
	var names []string
	for _, h := range l.socks {
		if h.spec.For(service) {
			files, names = append(files, h.file), append(names, h.spec.Name)
		}
	}
	return files, names
}

// all returns every socket and its name.
func (l *Listeners) all() ([]*os.File, []string) {
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
func (l *Listeners) Addrs() map[string]string {
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

// mounts are the unix sockets to bind into the capsule: host path ->
// capsule path.
func (l *Listeners) mounts() [][2]string {
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
func (l *Listeners) Close() {
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
func (l *Listeners) RemovePaths() {
	if l == nil {
		return
	}
	for _, h := range l.socks {
		if h.hostPath != "" {
			_ = os.Remove(h.hostPath)
		}
	}
}

// fromHeld rebuilds the set of manifest m from files the capsule's init
// kept (re-adoption), matched by name. A socket the init did not hand back
// is opened anew.
func fromHeld(m *specs.Manifest, runDir string, files []*os.File, names []string) (*Listeners, error) {
	held := &Listeners{}
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
			h.hostPath = SocketHostPath(runDir, m.Name, s.Name)
		}
		held.socks = append(held.socks, h)
	}
	out, err := held.derive(m, runDir)
	held.Close()
	return out, err
}

// listenEnv is the systemd socket-activation environment for names (the
// init adds LISTEN_PID once the service's pid is known).
func listenEnv(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	return []string{"LISTEN_FDS=" + strconv.Itoa(len(names)), "LISTEN_FDNAMES=" + strings.Join(names, ":")}
}

// holdSockets gives the capsule's init a copy of its listening sockets.
func (i *Instance) holdSockets() error {
	files, names := i.sockets.all()
	if len(files) == 0 {
		return nil
	}
	if err := capinit.Hold(context.Background(), i.paths.Socket, initAnswerTimeout, files, names); err != nil {
		return fmt.Errorf("handing the sockets to the capsule's init: %w", err)
	}
	return nil
}

// openSockets gives a new instance its listening sockets: a share of the
// capsule's (Options.Shared), or its own, opened now.
func (i *Instance) openSockets() error {
	var base *Listeners
	if i.opts.Shared != nil {
		base = i.opts.Shared.listeners()
	} else {
		i.ownSockets = true
	}
	l, err := base.derive(i.Manifest, i.opts.RunDir)
	if err != nil {
		return err
	}
	i.sockets = l
	return nil
}

// adoptSockets takes back the sockets the init kept, once adopted.
func (i *Instance) adoptSockets() error {
	var base *Listeners
	if i.opts.Shared != nil {
		base = i.opts.Shared.listeners()
	}
	var err error
	if base != nil && len(base.socks) > 0 {
		closeFiles(i.heldFiles)
		i.sockets, err = base.derive(i.Manifest, i.opts.RunDir)
	} else {
		i.sockets, err = fromHeld(i.Manifest, i.opts.RunDir, i.heldFiles, i.heldNames)
		i.ownSockets = i.opts.Shared == nil
	}
	i.heldFiles, i.heldNames = nil, nil
	return err
}

func (i *Instance) closeSockets() {
	i.sockets.Close()
	if i.ownSockets {
		for _, m := range i.Manifest.Sockets {
			if m.Network == specs.SocketUnix {
				_ = os.Remove(SocketHostPath(i.opts.RunDir, i.Manifest.Name, m.Name))
			}
		}
	}
}

// Sockets are the instance's listening sockets' addresses by name (a tcp
// port 0 shows the port the kernel chose).
func (i *Instance) Sockets() map[string]string { return i.sockets.Addrs() }

// portOf is the port of a host:port address ("" when it has none).
func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
