//go:build linux

package capinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// InitCommand is the argument that makes a binary the init of a capsule:
// PID 1 of its namespaces. Both tori-run (the fallback: runtime.MaybeInit)
// and the small cmd/tori-init take it, so the spec's process is
// "BINARY capsule-init" whichever is bound in.
//
// Why an init of our own starts the services (and not libcontainer's way of
// running an extra process in a container): the init is already in every
// namespace, so a service start is a plain fork/exec (~1 ms) rather than a
// re-exec through nsexec (10–27 ms here); the init is the services' parent,
// so it reaps them and every orphan for free; and the services do not depend
// on the tori-run that asked for them: if it dies, they keep running and a new
// tori-run can reconnect to the init's socket (as containerd's shims allow).
// The init is small: it holds no policy. Restart decisions, probes, logs and
// limits live on the host side.
const InitCommand = "capsule-init"

// The requests (Request.Op).
const (
	OpStart    = "start"
	OpAdopt    = "adopt"
	OpHold     = "hold"
	OpShutdown = "shutdown"
	// OpDieWithHost asks the capsule's init to exit (and the kernel to kill
	// every process of the capsule) when the connection that asked closes:
	// when the host's process ends, however it ends (runtime/exec.go:
	// Instance.TieToProcess).
	OpDieWithHost = "die-with-host"
)

// Messages between the host and the init, one per packet. Files travel as
// SCM_RIGHTS alongside, in groups in a fixed order, each group's size given
// by a field of the request (a new kind of file is a new group, appended at
// the end with its own count):
//
//	stdout, stderr                 always
//	Keep files                     read ends of the service's output pipes
//	CgroupFiles files              v1 tasks files; a cgroup2 folder only as a
//	                               detached copy (cgroups.Group.SpawnFiles, host side)
//
// Never a folder of the host's mount: a folder fd is a way out of every
// namespace (runc's CVE-2024-21626). On v2 the init opens the service's
// cgroup itself, by name (Cgroup), in its own cgroup namespace.
type Request struct {
	Op      string   `json:"op"` // OpStart, OpAdopt, OpHold, OpShutdown or OpDieWithHost
	Service string   `json:"service,omitempty"`
	Args    []string `json:"args,omitempty"`
	Env     []string `json:"env,omitempty"`
	Dir     string   `json:"dir,omitempty"`
	UID     uint32   `json:"uid,omitempty"`
	GID     uint32   `json:"gid,omitempty"`
	// Keep is how many files after stdout and stderr the init keeps while
	// the service lives: read ends of its output pipes, so that the pipes
	// outlive a dead tori-run and a new one can take them (adopt).
	Keep int `json:"keep,omitempty"`
	// CgroupVersion says how to start the service in its cgroup
	// (spawn.StartIn): 2 with Cgroup, 1 with CgroupFiles.
	CgroupVersion int `json:"cgroup_version,omitempty"`
	// Cgroup is the service's cgroup relative to the capsule's (the root of
	// the init's cgroup namespace), "svc-web": on v2 the init opens it under
	// capsuleCgroupMount.
	Cgroup string `json:"cgroup,omitempty"`
	// CgroupFiles is how many files after the kept ones are cgroup files.
	CgroupFiles int `json:"cgroup_files,omitempty"`
	// Listen is how many listening sockets come last, after the cgroup
	// files: the service gets them as fds 3.. (LISTEN_FDS). With "hold",
	// every file is a socket to keep, and Names names them.
	Listen int      `json:"listen,omitempty"`
	Names  []string `json:"names,omitempty"`
}

// Adopted is one service in the answer to "adopt"; its pidfd and kept
// files travel with it.
type Adopted struct {
	Service string `json:"service"`
	Pid     int    `json:"pid"`
	Keep    int    `json:"keep"`
	// Sockets, on the last (empty) packet, names the listening sockets the
	// init holds for the capsule, which travel with it.
	Sockets []string `json:"sockets,omitempty"`
}

type Reply struct {
	OK    bool   `json:"ok"`
	Pid   int    `json:"pid,omitempty"` // in the capsule's PID namespace
	Error string `json:"error,omitempty"`
	Errno string `json:"errno,omitempty"` // ENOENT, EACCES, ENOEXEC... when exec failed
}

// Exit is sent on a start's connection when that service has exited.
type Exit struct {
	Pid    int    `json:"pid"`
	Code   int    `json:"code"`
	Signal int    `json:"signal,omitempty"`
	Core   bool   `json:"core,omitempty"`
	Error  string `json:"error,omitempty"`
}

const MaxPacket = 64 << 10

// CheckPeerOutside accepts only peers outside the capsule's PID namespace:
// the kernel reports such a peer's pid as 0. A service inside the capsule
// that finds the socket cannot use it to start processes.
func CheckPeerOutside(c *net.UnixConn) error {
	cred, err := PeerCred(c)
	if err != nil {
		return err
	}
	if cred.Pid != 0 || cred.Uid != 0 {
		return fmt.Errorf("peer pid %d uid %d is inside the capsule or not root", cred.Pid, cred.Uid)
	}
	return nil
}

// PeerCred reads the credentials of the process at the other end of c, as
// the kernel saw them at connect (pid in our PID namespace, 0 if outside).
func PeerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, err
	}
	return cred, cerr
}

func WriteMsg(c *net.UnixConn, v any, fds []int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

// ReadMsg reads one packet (a request: up to MaxPacket) into v and returns
// the files that came with it.
func ReadMsg(c *net.UnixConn, v any) ([]*os.File, error) {
	return ReadMsgN(c, v, MaxPacket)
}

// MaxAnswer bounds an answer or exit message of the init: small JSON. A
// waiting service holds its buffer for its whole life, so it stays small.
const MaxAnswer = 4 << 10

// ReadMsgN reads one packet of at most size bytes.
func ReadMsgN(c *net.UnixConn, v any, size int) ([]*os.File, error) {
	oob := make([]byte, unix.CmsgSpace(64*4))
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	// MSG_CMSG_CLOEXEC: the received fds are close-on-exec from the moment
	// they exist, so a service that another goroutine forks meanwhile cannot
	// inherit them (another service's pipes, the cgroup files).
	//
	// The buffer is sized to the packet: MSG_PEEK|MSG_TRUNC gives its length
	// without taking it (unix seqpacket, Linux 3.4+; no control buffer, so
	// no fd is installed by the peek). A start request takes a few KiB; a
	// buffer of size (64 KiB) for each of 100 services started at once left
	// ~5 MiB of garbage in the idle init, which no collection reclaims while
	// nothing allocates (docs/PERFORMANCE.md).
	var buf []byte
	var n, oobn int
	var rerr error
	err = raw.Read(func(fd uintptr) bool {
		if buf == nil {
			var one [1]byte
			m, _, _, _, perr := unix.Recvmsg(int(fd), one[:], nil, unix.MSG_PEEK|unix.MSG_TRUNC)
			if errors.Is(perr, unix.EAGAIN) {
				return false
			}
			if perr != nil {
				rerr = perr
				return true
			}
			buf = make([]byte, max(1, min(m, size)))
		}
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return nil, err
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), "passed"))
			}
		}
	}
	if n == 0 {
		return files, fmt.Errorf("connection closed")
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		return files, fmt.Errorf("bad message: %w", err)
	}
	return files, nil
}

func CloseFiles(files []*os.File) {
	for _, f := range files {
		_ = f.Close()
	}
}

func EnvValue(env []string, name string) string {
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, name+"="); ok {
			return v
		}
	}
	return ""
}
