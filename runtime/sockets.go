//go:build linux

package runtime

import (
	"context"
	"fmt"
	"os"

	"github.com/tori-run/tori-run/runtime/capinit"
	"github.com/tori-run/tori-run/runtime/listeners"
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
// and is bound into the capsule at its declared path. runtime/listeners
// holds the sockets; here the instance gets and hands them over.

// Listeners is a capsule's set of listening sockets (runtime/listeners).
type Listeners = listeners.Set

// SocketHostPath is where a capsule's unix socket lives on the host.
func SocketHostPath(runDir, capsule, name string) string {
	return listeners.HostPath(runDir, capsule, name)
}

// OpenListeners opens every socket the manifest declares.
func OpenListeners(m *specs.Manifest, runDir string) (*Listeners, error) {
	return listeners.Open(m, runDir)
}

// holdSockets gives the capsule's init a copy of its listening sockets.
func (i *Instance) holdSockets() error {
	files, names := i.sockets.All()
	if len(files) == 0 {
		return nil
	}
	if err := capinit.Hold(context.Background(), i.paths.InitSocket, initAnswerTimeout, files, names); err != nil {
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
	l, err := base.Derive(i.Manifest, i.opts.RunDir)
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
	if base.Len() > 0 {
		closeFiles(i.heldFiles)
		i.sockets, err = base.Derive(i.Manifest, i.opts.RunDir)
	} else {
		i.sockets, err = listeners.FromHeld(i.Manifest, i.opts.RunDir, i.heldFiles, i.heldNames)
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
