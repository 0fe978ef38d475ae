//go:build linux

package runtime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/tori-run/tori-run/supervisor"
)

// LogOptions select what ReadCapsuleLogs passes on.
type LogOptions = supervisor.ReadOptions

// LogLine is one record of a capsule's logs.
type LogLine struct {
	Service string `json:"service"`
	supervisor.Line
}

// ReadCapsuleLogs passes the log records of target (NAME or NAME/SERVICE)
// to fn: without Follow, every service's records merged in time order (Tail
// counts the merged records); with Follow, then every new record as it is
// written, until ctx ends. It reads the files under LogDir, so it works
// whether or not the capsule or the daemon runs.
func ReadCapsuleLogs(ctx context.Context, root, target string, o LogOptions, fn func(LogLine) error) error {
	name, service, _ := strings.Cut(target, "/")
	dir := LogDir(root, name)
	services := []string{service}
	if service == "" {
		files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
		services = services[:0]
		for _, f := range files {
			services = append(services, strings.TrimSuffix(filepath.Base(f), ".log"))
		}
	}
	if len(services) == 0 || (service != "" && !exists(supervisor.LogPath(dir, service))) {
		return fmt.Errorf("no logs for %s under %s", target, dir)
	}
	// What exists: merged, then the tail of it.
	var past []LogLine
	for _, s := range services {
		err := supervisor.ReadLogs(ctx, dir, s, supervisor.ReadOptions{Since: o.Since}, func(l supervisor.Line) error {
			past = append(past, LogLine{Service: s, Line: l})
			return nil
		})
		if err != nil {
			return err
		}
	}
	sort.SliceStable(past, func(i, j int) bool { return past[i].Time.Before(past[j].Time) })
	if o.Tail > 0 && len(past) > o.Tail {
		past = past[len(past)-o.Tail:]
	}
	for _, l := range past {
		if err := fn(l); err != nil {
			return err
		}
	}
	if !o.Follow {
		return nil
	}
	// Then what comes: each service followed from the end of what was read.
	var (
		mu   sync.Mutex // serialises fn
		wg   sync.WaitGroup
		errc = make(chan error, len(services))
	)
	last := o.Since
	if len(past) > 0 {
		last = past[len(past)-1].Time
	}
	for _, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- supervisor.ReadLogs(ctx, dir, s, supervisor.ReadOptions{Follow: true, Tail: 0, Since: last}, func(l supervisor.Line) error {
				if !l.Time.After(last) {
					return nil // already passed on
				}
				mu.Lock()
				defer mu.Unlock()
				return fn(LogLine{Service: s, Line: l})
			})
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
