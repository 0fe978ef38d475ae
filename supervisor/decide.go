package supervisor

import (
	"fmt"
	"math"
	"time"
)

// Rand is the random source of the backoff jitter; *math/rand/v2.Rand
// implements it. Float64 returns a number in [0, 1).
type Rand interface {
	Float64() float64
}

// JitterFraction is the backoff jitter: a delay d becomes uniform in
// [d×0.9, d×1.1), then capped at Backoff.Max.
const JitterFraction = 0.1

// History is what the restart decision remembers of a service. It is a
// value: Decide returns the next one.
type History struct {
	// Restarts are the times restarts were decided, oldest first, pruned to
	// the restart window.
	Restarts []time.Time `json:"restarts,omitempty"`
	// Attempt is the backoff exponent: restarts since the last run that
	// lasted ResetAfter.
	Attempt int `json:"attempt"`
}

// Outcome is how one run of a service ended.
type Outcome struct {
	// Reason is why it ended: ReasonExited, ReasonCrashed,
	// ReasonOOMKilled, ReasonLost, ReasonUnhealthy, ReasonNotReady,
	// ReasonStartFailed, ReasonPermanentError, ReasonStopRequested.
	Reason Reason
	// Message says it for people ("exited with status 1").
	Message string
	// Started and Ended bound the run (equal for a start error).
	Started, Ended time.Time
}

// Decision is what to do after an Outcome.
type Decision struct {
	Restart bool
	Delay   time.Duration // before the restart
	// State is StateBackingOff for a restart, else the terminal state.
	State   State
	Reason  Reason
	Message string
}

// Decide is the restart decision: a pure function of the service's policy,
// its history, how the run ended, the time now and a random source. The
// checks run in a fixed order:
//
//  1. a stop request ends in stopped;
//  2. a permanent start error fails at once (restarting cannot fix it);
//  3. the policy: never, or on-failure after a clean exit, ends the service
//     (exited when clean, failed otherwise);
//  4. a run that lasted ResetAfter resets the backoff exponent;
//  5. MaxRestarts restarts already within RestartWindow fail it as a crash
//     loop;
//  6. otherwise restart after min(Initial×2^Attempt, Max), jittered ±10%
//     and capped at Max.
func Decide(cfg *ServiceConfig, h History, o Outcome, now time.Time, rnd Rand) (Decision, History) {
	switch o.Reason {
	case ReasonStopRequested, ReasonRestartRequested:
		return Decision{State: StateStopped, Reason: o.Reason, Message: o.Message}, h
	case ReasonPermanentError:
		return Decision{State: StateFailed, Reason: ReasonPermanentError,
			Message: o.Message + " (restarting cannot fix this)"}, h
	}
	failure := o.Reason.failure()
	if cfg.Restart == RestartNever || (cfg.Restart == RestartOnFailure && !failure) {
		st := StateExited
		if failure {
			st = StateFailed
		}
		return Decision{State: st, Reason: o.Reason, Message: o.Message}, h
	}
	if cfg.Backoff.ResetAfter > 0 && o.Ended.Sub(o.Started) >= cfg.Backoff.ResetAfter {
		h.Attempt = 0
	}
	// Keep only the restarts within the window ending now.
	kept := h.Restarts[:0:0]
	for _, t := range h.Restarts {
		if cfg.RestartWindow > 0 && now.Sub(t) < cfg.RestartWindow {
			kept = append(kept, t)
		}
	}
	h.Restarts = kept
	if cfg.MaxRestarts > 0 && len(h.Restarts) >= cfg.MaxRestarts {
		return Decision{State: StateFailed, Reason: ReasonCrashLoop,
			Message: fmt.Sprintf("%d restarts within %s; last: %s", len(h.Restarts), cfg.RestartWindow, o.Message)}, h
	}
	d := backoffDelay(cfg.Backoff, h.Attempt, rnd)
	h.Attempt++
	h.Restarts = append(h.Restarts, now)
	return Decision{Restart: true, Delay: d, State: StateBackingOff, Reason: o.Reason,
		Message: fmt.Sprintf("%s; restarting in %s", o.Message, d)}, h
}

// backoffDelay is min(b.Initial×2^attempt, b.Max) with ±10% jitter, capped
// at b.Max.
func backoffDelay(b Backoff, attempt int, rnd Rand) time.Duration {
	if b.Initial <= 0 {
		return 0
	}
	base := b.Max
	if attempt < 62 {
		if f := float64(b.Initial) * math.Exp2(float64(attempt)); f < float64(b.Max) {
			base = time.Duration(f)
		}
	}
	j := 1.0
	if rnd != nil {
		j = 1 - JitterFraction + 2*JitterFraction*rnd.Float64()
	}
	d := time.Duration(math.Round(float64(base) * j))
	return min(d, b.Max)
}
