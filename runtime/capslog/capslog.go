// Package capslog reads a capsule's service logs as tori-run logs and run
// show them: merged in time order, followed, echoed line by line. It reads
// the files the supervisor writes under layout's Logs folder, so it works
// whether or not the capsule or the daemon runs.
package capslog

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/supervisor"
)

// Options select what Read passes on.
type Options = supervisor.ReadOptions

// Line is one record of a capsule's logs.
type Line struct {
	Service string `json:"service"`
	supervisor.Line
}

// Read passes the log records of target (NAME or NAME/SERVICE)
// to fn: without Follow, every service's records merged in time order (Tail
// counts the merged records); with Follow, then every new record as it is
// written, until ctx ends.
func Read(ctx context.Context, root, target string, o Options, fn func(Line) error) error {
	name, service, _ := strings.Cut(target, "/")
	dir := layout.Layout{Root: root}.Logs(name)
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
	var past []Line
	for _, s := range services {
		err := supervisor.ReadLogs(ctx, dir, s, supervisor.ReadOptions{Since: o.Since}, func(l supervisor.Line) error {
			past = append(past, Line{Service: s, Line: l})
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
				return fn(Line{Service: s, Line: l})
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

// Echo follows every service's log from now on and prints its lines to
// out. The returned func, called once the supervisor has stopped (its log
// writers are closed, so the files are complete), stops following and
// prints what the followers had not reached yet: no sleep, nothing lost.
// The first write error is passed to failed, once; later lines are dropped
// (they stay in the log files).
func Echo(ctx context.Context, dir string, services []string, out io.Writer, failed func(error)) func() {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &lineWriter{out: out, failed: failed}
	since := time.Now()
	seen := make([]int, len(services)) // lines passed on per service, in file order
	var wg sync.WaitGroup
	for k, s := range services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = supervisor.ReadLogs(fctx, dir, s, supervisor.ReadOptions{Since: since, Follow: true}, func(l supervisor.Line) error {
				seen[k]++
				w.print(s, l.Text)
				return nil
			})
		}()
	}
	return func() {
		cancel()
		wg.Wait()
		// The same files in the same order from the same Since: skipping
		// what the follower passed on leaves exactly the lines it missed.
		for k, s := range services {
			n := 0
			_ = supervisor.ReadLogs(context.WithoutCancel(ctx), dir, s, supervisor.ReadOptions{Since: since}, func(l supervisor.Line) error {
				if n++; n > seen[k] {
					w.print(s, l.Text)
				}
				return nil
			})
		}
	}
}

// lineWriter interleaves whole lines from several services.
type lineWriter struct {
	mu     sync.Mutex // guards out and err
	out    io.Writer
	err    error // the first write error: nothing more is written
	failed func(error)
}

func (w *lineWriter) print(name, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	if _, err := fmt.Fprintf(w.out, "%-14s | %s\n", name, text); err != nil {
		w.err = err
		if w.failed != nil {
			w.failed(err)
		}
	}
}
