//go:build linux

package capinit

import (
	"os"
	"strings"
	"testing"
)

// TestInitRefusesHostFolders: a cgroup "file" that is a folder leading up
// (any folder of the host's tree, as SpawnFiles once sent) is refused
// before anything starts; so is a request whose file counts do not add up.
func TestInitRefusesHostFolders(t *testing.T) {
	s := &initServer{procs: map[int]*initProc{}}
	open := func(p string) *os.File {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	null := open(os.DevNull)
	host := open(t.TempDir())
	err := s.start(&Request{Op: "start", Service: "x", Args: []string{"/bin/true"}, CgroupVersion: 1, CgroupFiles: 1},
		[]*os.File{null, null, host}, nil)
	if err == nil || !strings.Contains(err.Error(), "leads up") {
		t.Errorf("a host folder as a cgroup file: %v, want refused", err)
	}
	err = s.start(&Request{Op: "start", Service: "x", Args: []string{"/bin/true"}, CgroupVersion: 1, CgroupFiles: 2},
		[]*os.File{null, null, host}, nil)
	if err == nil || !strings.Contains(err.Error(), "expected") {
		t.Errorf("file counts that do not add up: %v, want refused", err)
	}
	err = s.start(&Request{Op: "start", Service: "x", Args: []string{"/bin/true"}, CgroupVersion: 2, Cgroup: "../../etc"},
		[]*os.File{null, null}, nil)
	if err == nil {
		t.Error("a cgroup name that climbs was accepted")
	}
	if len(s.procs) != 0 {
		t.Errorf("something started: %v", s.procs)
	}
}
