package state

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test runs writers in a child process (this test binary again,
// in the mode selected by crashChildEnv), SIGKILLs it at a random moment,
// then opens the directory and checks that every write the child
// acknowledged is there, that the files are intact and that no file is left
// that no manifest lists. TORI_STATE_CRASH_ROUNDS sets the number of rounds.

const (
	crashChildEnv = "TORI_STATE_CRASH_CHILD" // the state directory
	crashRoundEnv = "TORI_STATE_CRASH_ROUND"
	crashWriters  = 8
	crashKeysPerW = 25
	crashAckFD    = 3
	defaultRounds = 30
)

func crashOptions() Options {
	return Options{Buffer: 32, FlushInterval: 20 * time.Millisecond, CompactRatio: 2}
}

// TestCrashChild is the child's body; it does nothing in a normal run.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("helper for TestCrashRecovery")
	}
	round := os.Getenv(crashRoundEnv)
	acks := os.NewFile(crashAckFD, "acks")
	opts := crashOptions()
	if images := os.Getenv(crashLossyEnv); images != "" {
		opts.syncFile = lossySync(images)
	}
	s, err := Open(dir, opts)
	if err != nil {
		fmt.Fprintf(acks, "X %v\n", err)
		os.Exit(3)
	}
	var wg sync.WaitGroup
	for w := range crashWriters {
		wg.Go(func() { crashWriter(s, acks, w, round) })
	}
	wg.Wait() // until SIGKILL
}

// crashWriter owns keys w<w>/*: per key, its operations are sequential, so
// at most one is in flight when the child dies. It reports "I" (intent)
// before an operation and "A" after it is acknowledged.
func crashWriter(s *Store, acks *os.File, w int, round string) {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(w)))
	ctx := context.Background()
	for n := 0; ; n++ {
		key := fmt.Sprintf("w%d/%02d", w, rng.IntN(crashKeysPerW))
		val := fmt.Sprintf("r%s-w%d-n%d", round, w, n)
		var line string
		var op func() error
		switch r := rng.IntN(10); {
		case r < 6:
			line = fmt.Sprintf("P %s %s", key, val)
			op = func() error { _, err := s.Put(ctx, "crash", key, []byte(val)); return err }
		case r < 8:
			line = fmt.Sprintf("D %s -", key)
			op = func() error { _, err := s.Delete(ctx, "crash", key); return err }
		case r < 9:
			line = fmt.Sprintf("E %s %s", key, val)
			op = func() error { _, err := s.AppendEvent(ctx, "crash", []byte(val)); return err }
		default: // a batch: put key, delete its neighbour, as one
			other := fmt.Sprintf("w%d/%02d", w, (rng.IntN(crashKeysPerW)))
			if other == key {
				other = key + "x"
			}
			line = fmt.Sprintf("B %s %s %s", key, val, other)
			op = func() error {
				_, err := s.Apply(ctx, "crash", []Mutation{{Op: OpPut, Key: key, Value: []byte(val)}, {Op: OpDelete, Key: other}})
				return err
			}
		}
		fmt.Fprintf(acks, "I %d %s\n", w, line)
		if err := op(); err != nil {
			fmt.Fprintf(acks, "X %v\n", err)
			return
		}
		fmt.Fprintf(acks, "A %d\n", w)
	}
}

// crashModel is what the parent knows: the value of every key (absent =
// deleted) and the events it must find.
type crashModel struct {
	kv     map[string]string
	events map[string]bool // acknowledged event bodies
}

// pendingOp is an operation a writer started and may or may not have completed.
type pendingOp []string

func TestCrashRecovery(t *testing.T) {
	rounds := defaultRounds
	if v := os.Getenv("TORI_STATE_CRASH_ROUNDS"); v != "" {
		var err error
		if rounds, err = strconv.Atoi(v); err != nil {
			t.Fatalf("TORI_STATE_CRASH_ROUNDS=%q: %v", v, err)
		}
	}
	if testing.Short() {
		rounds = min(rounds, 5)
	}
	dir := t.TempDir()
	m := crashModel{kv: map[string]string{}, events: map[string]bool{}}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d rounds", seed, rounds)
	rng := rand.New(rand.NewPCG(seed, 3))
	acked := 0
	for round := range rounds {
		killAfter := time.Duration(5+rng.IntN(150)) * time.Millisecond
		pending, n := runCrashChild(t, dir, round, killAfter, &m)
		acked += n
		checkCrashRecovery(t, dir, round, &m, pending)
		if t.Failed() {
			t.Fatalf("round %d (killed after %v) failed; state dir %s", round, killAfter, dir)
		}
	}
	t.Logf("%d acknowledged writes over %d rounds, all recovered", acked, rounds)
}

// runCrashChild starts a child, kills it after d, and applies the
// acknowledged operations to m. It returns each writer's operation in flight.
func runCrashChild(t *testing.T, dir string, round int, d time.Duration, m *crashModel) (map[string]pendingOp, int) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashRoundEnv+"="+strconv.Itoa(round))
	cmd.ExtraFiles = []*os.File{w} // fd 3 in the child
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		w.Close()
		t.Fatal(err)
	}
	w.Close()
	timer := time.AfterFunc(d, func() { cmd.Process.Signal(syscall.SIGKILL) })
	defer timer.Stop()
	pending := map[string]pendingOp{}
	n := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch f[0] {
		case "I":
			pending[f[1]] = f[2:]
		case "A":
			applyCrashOp(m, pending[f[1]])
			delete(pending, f[1])
			n++
		case "X":
			t.Errorf("round %d: child: %s", round, sc.Text())
		}
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Errorf("round %d: child ended by itself (%v) instead of being killed", round, err)
	}
	return pending, n
}

func applyCrashOp(m *crashModel, op pendingOp) {
	switch op[0] {
	case "P":
		m.kv[op[1]] = op[2]
	case "D":
		delete(m.kv, op[1])
	case "E":
		m.events[op[2]] = true
	case "B":
		m.kv[op[1]] = op[2]
		delete(m.kv, op[3])
	}
}

// checkCrashRecovery opens dir and compares it with m, allowing each
// writer's operation in flight to have happened or not (but not half of a
// batch). It then folds what happened into m.
func checkCrashRecovery(t *testing.T, dir string, round int, m *crashModel, pending map[string]pendingOp) {
	t.Helper()
	s, err := Open(dir, crashOptions())
	if err != nil {
		t.Fatalf("round %d: recovery: %v", round, err)
	}
	defer closeT(t, s)
	assertNoUnlisted(t, dir)
	got := map[string]string{}
	s.Scan("", func(e Entry) bool { got[e.Key] = string(e.Value); return true })
	events := map[string]bool{}
	for _, e := range s.Events(0, 1<<30) {
		events[string(e.Value)] = true
	}
	for _, op := range pending {
		// Did the operation in flight happen? Decide from what is on disk,
		// then check everything against the model with it applied or not.
		happened := false
		switch op[0] {
		case "P", "B":
			happened = got[op[1]] == op[2]
		case "D":
			_, present := got[op[1]]
			happened = !present
		case "E":
			happened = events[op[2]]
		}
		if happened {
			applyCrashOp(m, op)
		}
	}
	for k, v := range m.kv {
		if got[k] != v {
			t.Errorf("round %d: key %s = %q, acknowledged %q", round, k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := m.kv[k]; !ok {
			t.Errorf("round %d: key %s = %q present, but it was deleted or never written", round, k, v)
		}
	}
	for e := range m.events {
		if !events[e] {
			t.Errorf("round %d: acknowledged event %q lost", round, e)
		}
	}
	for e := range events {
		m.events[e] = true // in-flight events that made it
	}
}
