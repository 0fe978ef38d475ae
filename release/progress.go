package release

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress prints one updating line, "label  done / total MB  rate MB/s",
// at most five times a second. A nil *progress does nothing, so callers
// need not check. It is safe for concurrent use.
type progress struct {
	w     io.Writer
	label string
	total int64
	start time.Time

	mu   sync.Mutex // guards done and last
	done int64
	last time.Time
}

const progressEvery = 200 * time.Millisecond

func newProgress(w io.Writer, label string, total int64) *progress {
	if w == nil {
		return nil
	}
	now := time.Now()
	return &progress{w: w, label: label, total: total, start: now, last: now}
}

// Write counts len(p) bytes done, so a progress can sit in an io.MultiWriter.
func (p *progress) Write(b []byte) (int, error) {
	p.add(int64(len(b)))
	return len(b), nil
}

func (p *progress) add(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if now := time.Now(); now.Sub(p.last) >= progressEvery {
		p.last = now
		p.print(now)
	}
}

// finish prints the final line and ends it.
func (p *progress) finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.print(time.Now())
	fmt.Fprintln(p.w)
}

func (p *progress) print(now time.Time) {
	const mb = 1e6
	rate := 0.0
	if s := now.Sub(p.start).Seconds(); s > 0 {
		rate = float64(p.done) / mb / s
	}
	fmt.Fprintf(p.w, "\r%s  %.1f / %.1f MB  %.1f MB/s ", p.label, float64(p.done)/mb, float64(p.total)/mb, rate)
}
