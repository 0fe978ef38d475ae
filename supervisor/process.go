package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// One process of a service: starting it with its output piped into the
// log and its NOTIFY_SOCKET, stopping it (stop signal, timeout, a kill of
// the whole tree), and recording how it ended.

// start starts one process of svc, with its output piped into its log.
func (s *Supervisor) start(svc *service, h *loopHandle) (Process, time.Time, error) {
	s.transition(svc, StateStarting, ReasonStarting, "", Event{Type: EventStarting})
	var out Output
	if svc.cfg.Ready != nil && svc.cfg.Ready.Kind == ProbeNotify {
		if err := s.ensureNotify(svc); err != nil {
			return nil, time.Time{}, err
		}
		out.NotifySocket = svc.notify.path
	}
	var rOut, rErr *os.File
	if svc.log != nil {
		var err error
		if rOut, out.Stdout, err = os.Pipe(); err != nil {
			return nil, time.Time{}, fmt.Errorf("stdout pipe: %w", err)
		}
		if rErr, out.Stderr, err = os.Pipe(); err != nil {
			rOut.Close()
			out.Stdout.Close()
			return nil, time.Time{}, fmt.Errorf("stderr pipe: %w", err)
		}
	} else {
		out.Stdout, out.Stderr = s.devnull, s.devnull
	}
	p, err := s.runner.Start(h.stopCtx, svc.cfg.Name, out)
	if svc.log != nil {
		out.Stdout.Close()
		out.Stderr.Close()
	}
	if err != nil {
		if rOut != nil {
			rOut.Close()
			rErr.Close()
		}
		return nil, time.Time{}, err
	}
	if rOut != nil {
		s.copyOutput(svc, rOut, rErr)
	}
	return p, s.opts.Clock.Now(), nil
}

func (s *Supervisor) ensureNotify(svc *service) error {
	if svc.notify != nil {
		return nil
	}
	s.mu.Lock()
	dir := s.opts.NotifyDir
	if dir == "" {
		if s.tmpNotify == "" {
			d, err := os.MkdirTemp("", "tori-notify-")
			if err != nil {
				s.mu.Unlock()
				return fmt.Errorf("notify socket dir: %w", err)
			}
			s.tmpNotify = d
		}
		dir = s.tmpNotify
	}
	s.mu.Unlock()
	n, err := listenNotify(filepath.Join(dir, svc.cfg.Name+".notify"))
	if err != nil {
		return err
	}
	svc.notify = n
	return nil
}

// copyOutput copies a process's streams into svc's log until EOF.
func (s *Supervisor) copyOutput(svc *service, stdout, stderr io.ReadCloser) {
	maxLine := svc.logMaxLine()
	for _, st := range []struct {
		name string
		r    io.ReadCloser
	}{{"stdout", stdout}, {"stderr", stderr}} {
		if st.r == nil {
			continue
		}
		s.copiers.Add(1)
		go func() {
			defer s.copiers.Done()
			defer st.r.Close()
			if svc.log == nil {
				_, _ = io.Copy(io.Discard, st.r)
				return
			}
			copyLines(st.r, maxLine, time.Now, func(t time.Time, partial bool, text []byte) {
				if err := svc.log.write(t, st.name, partial, text); err != nil {
					svc.logErrors.Add(1)
				}
			})
		}()
	}
}

func (svc *service) logMaxLine() int {
	if svc.log == nil {
		return DefaultLogMaxLine
	}
	return svc.log.opts.MaxLine
}

// notifyFrom reports whether an sd_notify sender belongs to p's tree.
func notifyFrom(p Process, pid int) bool {
	if pid <= 0 {
		return false
	}
	if b, ok := p.(interface{ BelongsTo(pid int) bool }); ok {
		return b.BelongsTo(pid)
	}
	return pid == p.Pid()
}

// stopProcess stops p: its stop signal, then after StopTimeout (or at once
// when the stop's deadline passed) a kill of the whole tree; after the
// main process ended, a kill of what remains (children that ignored the
// signal, Supervisor#1101).
func (s *Supervisor) stopProcess(svc *service, h *loopHandle, p Process, why Reason) {
	sig := svc.cfg.StopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	s.transition(svc, StateStopping, why, fmt.Sprintf("sent %s", sigName(sig)), Event{Type: EventStopping, Pid: p.Pid()})
	for _, err := range terminate(p, sig, svc.cfg.StopTimeout, s.opts.Clock, h.kill) {
		s.opts.Log.Warn().Err(err).Str("service", svc.cfg.Name).Msg("stopping the service")
	}
}

// Terminate stops a process no supervisor runs (one a dead supervisor
// left, adopted only to be stopped) as a supervisor stops its own: sig
// (SIGTERM when 0), then after timeout, or at once when ctx ends, a kill of
// the whole tree, and again once the main process ended. It returns once
// the main process has ended.
func Terminate(ctx context.Context, p Process, sig syscall.Signal, timeout time.Duration) error {
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	return errors.Join(terminate(p, sig, timeout, RealClock{}, ctx.Done())...)
}

// terminate is the one stop sequence: sig, up to timeout for the main
// process to end (abort cuts it short), the tree killed, the end waited
// for, and the tree killed again if the first kill failed.
func terminate(p Process, sig syscall.Signal, timeout time.Duration, clock Clock, abort <-chan struct{}) []error {
	var errs []error
	if err := p.Signal(sig); err != nil {
		errs = append(errs, fmt.Errorf("stop signal %s: %w", sigName(sig), err))
	}
	if timeout > 0 {
		t := timer{clock: clock}
		t.arm(timeout)
		select {
		case <-p.Done():
		case <-t.C():
			t.fired()
		case <-abort:
		}
		t.stop()
	}
	// A Kill that succeeded left the tree empty (it waits until it is), so
	// nothing can have been forked into it since: a second pass, which reads
	// cgroup.procs in every hierarchy again, only follows a failed one.
	err := p.Kill()
	if err != nil {
		errs = append(errs, fmt.Errorf("killing the tree: %w", err))
	}
	<-p.Done()
	if err != nil {
		_ = p.Kill()
	}
	return errs
}

// ended records how p ended. why overrides the exit's own reason (a stop,
// a failed probe); msg then says it.
func (s *Supervisor) ended(svc *service, p Process, started time.Time, why Reason, msg string) Outcome {
	ex := p.Exit()
	now := s.opts.Clock.Now()
	r := ex.reason()
	if ex.OOMKilled || why == "" {
		why, msg = r, ex.String() // an OOM kill is reported as such even during a stop
	} else {
		msg += "; " + ex.String()
	}
	s.mu.Lock()
	svc.lastExit, svc.lastReason, svc.lastExitAt = &ex, why, now
	s.mu.Unlock()
	typ := EventExited
	if ex.OOMKilled {
		typ = EventOOMKilled
	}
	s.publish(svc, Event{Type: typ, Pid: p.Pid(), Reason: why, Message: msg, Exit: &ex})
	return Outcome{Reason: why, Message: msg, Started: started, Ended: now}
}

func sigName(sig syscall.Signal) string {
	if n := unixSignalName(sig); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(sig))
}
