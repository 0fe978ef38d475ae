package supervisor

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"
)

// stubProc is a Process that ends on a kill, or on a signal when it heeds
// signals; it records what it was sent.
type stubProc struct {
	heeds bool
	mu    sync.Mutex
	sigs  []syscall.Signal
	kills int
	once  sync.Once
	done  chan struct{}
}

func (p *stubProc) end()     { p.once.Do(func() { close(p.done) }) }
func (p *stubProc) Pid() int { return 1 }
func (p *stubProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	p.sigs = append(p.sigs, sig)
	p.mu.Unlock()
	if p.heeds {
		p.end()
	}
	return nil
}
func (p *stubProc) Kill() error {
	p.mu.Lock()
	p.kills++
	p.mu.Unlock()
	p.end()
	return nil
}
func (p *stubProc) Done() <-chan struct{} { return p.done }
func (p *stubProc) Exit() Exit            { return Exit{} }
func (p *stubProc) Stats() (Stats, error) { return Stats{}, nil }

// Terminate is the supervisor's own stop sequence: the stop signal, then
// the tree killed (after the timeout, or at once when ctx ends), and
// killed again once the main process ended, for what it left behind.
func TestTerminate(t *testing.T) {
	heeds := &stubProc{heeds: true, done: make(chan struct{})}
	if err := Terminate(context.Background(), heeds, syscall.SIGINT, time.Hour); err != nil {
		t.Fatal(err)
	}
	if len(heeds.sigs) != 1 || heeds.sigs[0] != syscall.SIGINT || heeds.kills == 0 {
		t.Errorf("a process that heeds its signal: sent %v, %d kills; want SIGINT, then the tree killed for what it left", heeds.sigs, heeds.kills)
	}

	deaf := &stubProc{done: make(chan struct{})}
	if err := Terminate(context.Background(), deaf, 0, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if len(deaf.sigs) != 1 || deaf.sigs[0] != syscall.SIGTERM || deaf.kills == 0 {
		t.Errorf("a process that ignores its signal: sent %v, %d kills; want SIGTERM (the default), then a kill", deaf.sigs, deaf.kills)
	}

	// The stop's deadline passed: killed without waiting out the timeout.
	late := &stubProc{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Terminate(ctx, late, syscall.SIGTERM, time.Hour); err != nil {
		t.Fatal(err)
	}
	if late.kills == 0 {
		t.Error("ctx ended, yet no kill")
	}
}
