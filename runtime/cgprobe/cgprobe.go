//go:build linux

// Package cgprobe is cgroups.Detect with its probes' answers kept under
// tori-run's run folder, so that a start does not probe the hierarchies
// again (runtime.Create uses it).
package cgprobe

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/tori-run/tori-run/cgroups"
	"github.com/tori-run/tori-run/internal/atomicfile"
	"github.com/tori-run/tori-run/layout"
)

// Detect is cgroups.Detect without its probe on every run: the probe
// (mkdir, list and rmdir of an empty child in each hierarchy, ~2 ms and an
// occasional EBUSY wait) answers the same until the cgroup mounts, our own
// cgroup or, on cgroup2, the parent's enabled controllers change, so its
// answers are kept in <rundir>/cgroup-probe.json. The run folder is a tmpfs
// (gone at reboot), and the file is keyed by the boot, the cgroup lines of
// mountinfo and /proc/self/cgroup; each answer also by the cgroup.subtree_control
// of the folder probed. Only successful probes are kept: a failure is probed
// again next time.
func Detect(runDir string) (*cgroups.Host, error) {
	if runDir == "" {
		return cgroups.Detect()
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	pc := &probeCache{path: layout.Layout{RunDir: runDir}.ProbeCache(), key: probeCacheKey(mi, self)}
	pc.load()
	h, err := cgroups.DetectFrom(bytes.NewReader(mi), bytes.NewReader(self), pc)
	if err == nil {
		pc.save()
	}
	return h, err
}

// probeCacheKey names what the probes' answers depend on.
func probeCacheKey(mountinfo, self []byte) string {
	sum := sha256.New()
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	sum.Write(boot)
	for _, line := range strings.Split(string(mountinfo), "\n") {
		if strings.Contains(line, " - cgroup ") || strings.Contains(line, " - cgroup2 ") {
			sum.Write([]byte(line + "\n"))
		}
	}
	sum.Write(self)
	return hex.EncodeToString(sum.Sum(nil))
}

// probeCache is a cgroups.Prober that answers ProbeChild from the file when
// it can.
type probeCache struct {
	path, key string
	mu        sync.Mutex // guards file and dirty
	file      probeFile
	dirty     bool
}

type probeFile struct {
	Key      string              `json:"key"`
	Children map[string][]string `json:"children"` // dir + "\n" + its subtree_control -> child files
}

func (p *probeCache) load() {
	b, err := os.ReadFile(p.path)
	if err == nil && json.Unmarshal(b, &p.file) == nil && p.file.Key == p.key && p.file.Children != nil {
		return
	}
	p.file = probeFile{Key: p.key, Children: map[string][]string{}}
}

// save writes the file when a probe was added (temp file and rename: a
// reader never sees half of it; not synced: it lives on a tmpfs and is only
// a cache).
func (p *probeCache) save() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.dirty {
		return
	}
	b, err := json.Marshal(p.file)
	if err != nil || os.MkdirAll(filepath.Dir(p.path), 0o700) != nil {
		return
	}
	_ = atomicfile.WriteFile(p.path, b, 0o600) // a cache: a failed write is a miss next time
}

// ReadFile reads path.
func (p *probeCache) ReadFile(path string) ([]byte, error) { return cgroups.OSProber{}.ReadFile(path) }

// ProbeChild answers from the file, else probes and keeps the answer.
func (p *probeCache) ProbeChild(dir string) ([]string, error) {
	subtree, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	k := dir + "\n" + strings.TrimSpace(string(subtree))
	p.mu.Lock()
	files, ok := p.file.Children[k]
	p.mu.Unlock()
	if ok {
		return files, nil
	}
	files, err := cgroups.OSProber{}.ProbeChild(dir)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.file.Children[k] = files
	p.dirty = true
	p.mu.Unlock()
	return files, nil
}
