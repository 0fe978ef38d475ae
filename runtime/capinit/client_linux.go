//go:build linux

package capinit

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"
)

// The host side of the protocol: one connection to the init's socket per
// request. The init answers in milliseconds when it lives; each call's
// timeout turns an init that never started (or died) into an error, not a
// hang, since the listening socket (the host's) accepts connections either
// way.

// Refused is a start the init refused: its message, and the name of the
// errno it failed with (ENOENT, EACCES...; "" when none).
type Refused struct {
	Msg   string
	Errno string
}

func (e *Refused) Error() string { return e.Msg }

// dial connects to the init's socket, every read and write bounded by
// timeout from now.
func dial(ctx context.Context, socket string, timeout time.Duration) (*net.UnixConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unixpacket", socket)
	if err != nil {
		return nil, fmt.Errorf("the capsule's init does not answer at %s: %w", socket, err)
	}
	conn := c.(*net.UnixConn)
	_ = conn.SetDeadline(time.Now().Add(timeout))
	return conn, nil
}

func fdsOf(files []*os.File) []int {
	fds := make([]int, len(files))
	for k, f := range files {
		fds[k] = int(f.Fd())
	}
	return fds
}

// Started is a service the init started: its pid in the capsule's PID
// namespace, a pidfd, and the connection its exit comes on (WaitExit).
type Started struct {
	Pid   int
	Pidfd *os.File
	Conn  *net.UnixConn
}

// Start asks the init to start a service. files are req's groups in order:
// stdout, stderr, the Keep files, the CgroupFiles, the Listen sockets. A
// refusal is a *Refused.
func Start(ctx context.Context, socket string, timeout time.Duration, req Request, files []*os.File) (*Started, error) {
	req.Op = OpStart
	conn, err := dial(ctx, socket, timeout)
	if err != nil {
		return nil, err
	}
	if err := WriteMsg(conn, req, fdsOf(files)); err != nil {
		conn.Close()
		return nil, err
	}
	var rep Reply
	got, err := ReadMsgN(conn, &rep, MaxAnswer)
	if err == nil && !rep.OK {
		err = &Refused{Msg: rep.Error, Errno: rep.Errno}
	} else if err == nil && len(got) != 1 {
		err = fmt.Errorf("the init sent %d files, expected a pidfd", len(got))
	} else if err != nil {
		err = fmt.Errorf("no answer from the capsule's init: %w", err)
	}
	if err != nil {
		conn.Close()
		CloseFiles(got)
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{}) // the exit message comes when it comes
	return &Started{Pid: rep.Pid, Pidfd: got[0], Conn: conn}, nil
}

// WaitExit reads the next exit the init reports on conn (a start's, or an
// adoption's, which carries several).
func WaitExit(conn *net.UnixConn) (Exit, error) {
	var ex Exit
	files, err := ReadMsgN(conn, &ex, MaxAnswer)
	CloseFiles(files)
	return ex, err
}

// AdoptedFiles is one live service handed over by Adopt: its pidfd and, when
// the init kept them (Keep == 2), read ends of its stdout and stderr.
type AdoptedFiles struct {
	Adopted
	Pidfd          *os.File
	Stdout, Stderr *os.File
}

// Adopt asks the init for every live service and the listening sockets it
// holds (with their names); the returned connection then carries the
// services' exits (WaitExit) and must be kept open while they run.
func Adopt(ctx context.Context, socket string, timeout time.Duration) (procs []AdoptedFiles, held []*os.File, names []string, conn *net.UnixConn, err error) {
	conn, err = dial(ctx, socket, timeout)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	fail := func(err error) ([]AdoptedFiles, []*os.File, []string, *net.UnixConn, error) {
		conn.Close()
		for _, p := range procs {
			CloseFiles([]*os.File{p.Pidfd, p.Stdout, p.Stderr})
		}
		return nil, nil, nil, nil, err
	}
	if err := WriteMsg(conn, Request{Op: OpAdopt}, nil); err != nil {
		return fail(err)
	}
	for {
		var p Adopted
		files, err := ReadMsgN(conn, &p, MaxAnswer)
		if err != nil {
			CloseFiles(files)
			return fail(fmt.Errorf("adopting: %w", err))
		}
		if p.Pid == 0 { // the last packet: the held sockets
			_ = conn.SetDeadline(time.Time{})
			return procs, files, p.Sockets, conn, nil
		}
		if len(files) != 1+p.Keep || (p.Keep != 0 && p.Keep != 2) {
			CloseFiles(files)
			return fail(fmt.Errorf("adopting %s: %d files for %d kept", p.Service, len(files), p.Keep))
		}
		a := AdoptedFiles{Adopted: p, Pidfd: files[0]}
		if p.Keep == 2 {
			a.Stdout, a.Stderr = files[1], files[2]
		}
		procs = append(procs, a)
	}
}

// Hold gives the init a copy of the capsule's listening sockets (replacing
// what it held), to hand to the next tori-run at Adopt.
func Hold(ctx context.Context, socket string, timeout time.Duration, files []*os.File, names []string) error {
	conn, err := dial(ctx, socket, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := WriteMsg(conn, Request{Op: OpHold, Names: names}, fdsOf(files)); err != nil {
		return err
	}
	var rep Reply
	got, err := ReadMsgN(conn, &rep, MaxAnswer)
	CloseFiles(got)
	if err != nil {
		return err
	}
	if !rep.OK {
		return &Refused{Msg: rep.Error, Errno: rep.Errno}
	}
	return nil
}

// DieWithHost ties the capsule to the returned connection: the init exits
// (and the kernel kills every process of the capsule) when it closes,
// however this process ends.
func DieWithHost(ctx context.Context, socket string, timeout time.Duration) (*net.UnixConn, error) {
	conn, err := dial(ctx, socket, timeout)
	if err != nil {
		return nil, err
	}
	if err := WriteMsg(conn, Request{Op: OpDieWithHost}, nil); err != nil {
		conn.Close()
		return nil, err
	}
	var rep Reply
	got, err := ReadMsgN(conn, &rep, MaxAnswer)
	CloseFiles(got)
	if err == nil && !rep.OK {
		err = &Refused{Msg: rep.Error, Errno: rep.Errno}
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("the init refused: %w", err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}
