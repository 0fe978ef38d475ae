package supervisor

// State is where a service is in its life. See docs/SUPERVISOR.md for the
// table of transitions.
type State string

// The states of a service.
const (
	// StateStopped: not running, and not going to run until asked
	// (before Start, after a stop request).
	StateStopped State = "stopped"
	// StateStarting: waiting for the services it follows to be ready, or
	// inside Runner.Start. No process yet.
	StateStarting State = "starting"
	// StateRunning: the process runs but has not passed its readiness
	// probe yet.
	StateRunning State = "running"
	// StateReady: the process runs and passed its readiness probe, or has
	// none. Services that follow it may start.
	StateReady State = "ready"
	// StateBackingOff: the process ended and will be started again after
	// the delay of the restart decision.
	StateBackingOff State = "backing-off"
	// StateStopping: the stop signal was sent; the tree is killed at
	// StopTimeout.
	StateStopping State = "stopping"
	// StateExited: ended cleanly (status 0) and, per policy (on-failure or
	// never), not restarted: a completed one-shot.
	StateExited State = "exited"
	// StateFailed: given up: a crash loop, a permanent start error, a
	// failed dependency, or a failure under restart: never.
	StateFailed State = "failed"
)

// Terminal reports whether no process runs or will run without a request.
func (s State) Terminal() bool {
	return s == StateStopped || s == StateExited || s == StateFailed
}

// Reason names why a service made its last transition.
type Reason string

// The reasons. Every transition carries one.
const (
	ReasonNotStarted       Reason = "not-started"       // → stopped: before Start
	ReasonWaiting          Reason = "waiting"           // → starting: for the services it follows
	ReasonStarting         Reason = "starting"          // → starting: inside Runner.Start
	ReasonStarted          Reason = "started"           // → running: the process runs
	ReasonAdopted          Reason = "adopted"           // → running/ready: taken over from a previous supervisor
	ReasonNoReadyProbe     Reason = "no-ready-probe"    // → ready: running is ready
	ReasonReadyProbe       Reason = "ready-probe"       // → ready: an exec/http/tcp probe passed
	ReasonNotifyReady      Reason = "notify-ready"      // → ready: READY=1 from the service's tree
	ReasonExited           Reason = "exited"            // process ended with status 0
	ReasonCrashed          Reason = "crashed"           // non-zero status or a signal
	ReasonOOMKilled        Reason = "oom-killed"        // killed by the kernel at its memory limit
	ReasonLost             Reason = "lost"              // the runner lost track of it (Exit.Err)
	ReasonUnhealthy        Reason = "unhealthy"         // health probe failed Retries times, on_failure: restart
	ReasonNotReady         Reason = "not-ready"         // readiness not reached within its retries
	ReasonStartFailed      Reason = "start-failed"      // Runner.Start failed; retrying may help
	ReasonPermanentError   Reason = "permanent-error"   // → failed: Runner.Start failed; retrying cannot help
	ReasonCrashLoop        Reason = "crash-loop"        // → failed: MaxRestarts within RestartWindow
	ReasonDependencyFailed Reason = "dependency-failed" // → failed: a service it follows cannot become ready
	ReasonStopRequested    Reason = "stop-requested"    // → stopping/stopped: Stop or StopService
	ReasonRestartRequested Reason = "restart-requested" // → stopping: RestartService
)

// failure reports whether an end for this reason counts as a failure for
// the on-failure policy.
func (r Reason) failure() bool {
	switch r {
	case ReasonCrashed, ReasonOOMKilled, ReasonLost, ReasonUnhealthy, ReasonNotReady, ReasonStartFailed, ReasonPermanentError:
		return true
	}
	return false
}

// Health is the result of a service's health probes.
type Health string

// The health values.
const (
	HealthNone      Health = ""          // no health probe, or not checked yet
	HealthHealthy   Health = "healthy"   // the last check passed
	HealthUnhealthy Health = "unhealthy" // Retries consecutive checks failed
)
