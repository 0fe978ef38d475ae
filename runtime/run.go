package runtime

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/tori-run/tori-run/runtime/release"
	"github.com/tori-run/tori-run/specs"
)

// Resolve finds what to run: a capsule.yml (its folder is the app), an app
// folder holding one, or an installed release by name or digest.
func Resolve(ref string, o Options) (*Target, error) {
	manifest := ""
	if fi, err := os.Stat(ref); err == nil {
		if fi.IsDir() {
			manifest = filepath.Join(ref, "capsule.yml")
		} else {
			manifest = ref
		}
	}
	if manifest != "" {
		m, err := specs.Load(manifest)
		if err != nil {
			return nil, err
		}
		app, err := filepath.Abs(filepath.Dir(manifest))
		if err != nil {
			return nil, err
		}
		if err := specs.CheckApp(m, os.DirFS(app)); err != nil {
			return nil, err
		}
		if err := checkLayers(m); err != nil {
			return nil, err
		}
		return &Target{Manifest: m, AppDir: app, Release: "unreleased"}, nil
	}
	store, err := release.Open(o.Root)
	if err != nil {
		return nil, err
	}
	rel, err := store.Resolve(ref)
	if err != nil {
		return nil, fmt.Errorf("%q is not a capsule.yml, an app folder or an installed release (tori-run list shows them): %w", ref, err)
	}
	m, err := specs.Load(filepath.Join(rel.Path, "capsule.yml"))
	if err != nil {
		return nil, err
	}
	if err := checkLayers(m); err != nil {
		return nil, err
	}
	return &Target{Manifest: m, AppDir: filepath.Join(rel.Path, "app"), Release: rel.Digest, BuildSHA: rel.BuildSHA}, nil
}

// checkLayers refuses layers this version cannot run yet, before anything
// is created.
func checkLayers(m *specs.Manifest) error {
	if len(m.Layers) == 1 && m.Layers[0] == specs.LayerHost {
		return nil
	}
	return fmt.Errorf("%s: layers %v: only the host layer is supported so far; rootfs layers are not installed by this version", m.Source, m.Layers)
}

// ServiceResult is how one service of a run ended.
type ServiceResult struct {
	Name     string
	Exit     ExitInfo
	StartErr error
	Stopped  bool // stopped by tori-run (signal, timeout, kill), not on its own
}

// RunResult is what a foreground run did.
type RunResult struct {
	Services []ServiceResult
	Signaled bool // the run was asked to stop
}

// OK says whether the run ended as asked: every service started, and each
// either was stopped by tori-run or exited 0 on its own, none OOM-killed.
func (r *RunResult) OK() bool {
	for _, s := range r.Services {
		if s.StartErr != nil || s.Exit.OOMKilled || (!s.Stopped && s.Exit.Code != 0) {
			return false
		}
	}
	return true
}

// Run runs a capsule in the foreground until ctx ends (SIGINT/SIGTERM) or
// every service has exited, then stops what is left in reverse order and
// removes the instance. Service output goes to out, line by line, prefixed
// with the service's name.
func Run(ctx context.Context, ref string, o Options, out io.Writer) (*RunResult, error) {
	t, err := Resolve(ref, o)
	if err != nil {
		return nil, err
	}
	inst, err := Create(ctx, t, o)
	if err != nil {
		return nil, err
	}
	res := &RunResult{}
	defer func() {
		if derr := inst.Destroy(context.WithoutCancel(ctx)); derr != nil {
			inst.Log.Error().Err(derr).Msg("removing the instance")
		}
	}()
	order, err := StartOrder(t.Manifest)
	if err != nil {
		return nil, err
	}
	var (
		running []*Service
		outputs sync.WaitGroup
		w       = &lineWriter{out: out}
	)
	for _, name := range order {
		svc, err := startWithOutput(ctx, inst, name, w, &outputs)
		if err != nil {
			inst.Log.Error().Err(err).Str(FieldService, name).Msg("service did not start")
			res.Services = append(res.Services, ServiceResult{Name: name, StartErr: err})
			break
		}
		running = append(running, svc)
	}
	results := waitAll(ctx, inst, running, res)
	res.Services = append(results, res.Services...)
	outputs.Wait()
	return res, nil
}

// waitAll waits until ctx ends or every service has exited, then stops the
// rest in reverse start order.
func waitAll(ctx context.Context, inst *Instance, running []*Service, res *RunResult) []ServiceResult {
	results := make([]ServiceResult, len(running))
	left := len(running)
	for i, s := range running {
		results[i].Name = s.Name
	}
	cases := make(chan int, len(running))
	for i, s := range running {
		go func() { <-s.Done(); cases <- i }()
	}
	for left > 0 {
		select {
		case i := <-cases:
			results[i].Exit = running[i].Exit()
			left--
			inst.Log.Info().Str(FieldService, running[i].Name).Str("reason", results[i].Exit.Reason()).Msg("service ended")
		case <-ctx.Done():
			res.Signaled = true
			for i := len(running) - 1; i >= 0; i-- {
				s := running[i]
				select {
				case <-s.Done():
					continue
				default:
				}
				inst.Log.Info().Str(FieldService, s.Name).Str("signal", inst.Manifest.Service(s.Name).StopSignal.Name).Msg("stopping service")
				results[i].Exit = s.Stop(context.WithoutCancel(ctx), inst.Manifest.Service(s.Name))
				results[i].Stopped = true
			}
			return results
		}
	}
	return results
}

func startWithOutput(ctx context.Context, inst *Instance, name string, w *lineWriter, wg *sync.WaitGroup) (*Service, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	svc, err := inst.StartService(ctx, name, outW, errW)
	// The service holds its own copies now; ours would keep the pipes open.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	for _, r := range []*os.File{outR, errR} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			w.copyLines(name, r)
		}()
	}
	return svc, nil
}

// lineWriter interleaves whole lines from several services.
type lineWriter struct {
	mu  sync.Mutex
	out io.Writer
}

const maxLine = 64 << 10

func (w *lineWriter) copyLines(name string, r io.Reader) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			w.mu.Lock()
			fmt.Fprintf(w.out, "%-14s | %s", name, line)
			if line[len(line)-1] != '\n' {
				fmt.Fprintln(w.out) // a long line is cut in pieces, an unterminated one ended
			}
			w.mu.Unlock()
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// StartOrder orders services so that each comes after those it names in
// after:, keeping the file's order otherwise.
func StartOrder(m *specs.Manifest) ([]string, error) {
	index := map[string]int{}
	for i, s := range m.Services {
		index[s.Name] = i
	}
	var out []string
	done := map[string]bool{}
	for len(out) < len(m.Services) {
		var ready []string
		for _, s := range m.Services {
			if done[s.Name] {
				continue
			}
			ok := true
			for _, a := range s.After {
				ok = ok && done[a]
			}
			if ok {
				ready = append(ready, s.Name)
			}
		}
		if len(ready) == 0 {
			return nil, fmt.Errorf("%s: services cannot be ordered (a cycle in after:)", m.Source)
		}
		sort.Slice(ready, func(i, j int) bool { return index[ready[i]] < index[ready[j]] })
		done[ready[0]] = true
		out = append(out, ready[0])
	}
	return out, nil
}

// Summary is a few lines saying how each service of a run ended.
func (r *RunResult) Summary() string {
	var b strings.Builder
	for _, s := range r.Services {
		switch {
		case s.StartErr != nil:
			fmt.Fprintf(&b, "%s: did not start: %v\n", s.Name, s.StartErr)
		case s.Stopped:
			fmt.Fprintf(&b, "%s: stopped, %s\n", s.Name, s.Exit.Reason())
		default:
			fmt.Fprintf(&b, "%s: %s on its own\n", s.Name, s.Exit.Reason())
		}
	}
	return b.String()
}
