package state

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// The memory test runs in a child process (this test binary again) so its
// peak RSS (VmHWM) measures the store alone, not the other tests.

const (
	memChildEnv = "TORI_STATE_MEM_CHILD" // "write:DIR:MiB" or "read:DIR"
	memValue    = 256 << 10
)

func memValueOf(i int) []byte {
	rng := rand.New(rand.NewPCG(uint64(i), 5))
	b := make([]byte, memValue)
	for j := 0; j < len(b); j += 8 {
		v := rng.Uint64()
		for k := 0; k < 8 && j+k < len(b); k++ {
			b[j+k] = byte(v >> (8 * k))
		}
	}
	return b
}

// TestMemoryChild is the child's body; it does nothing in a normal run.
func TestMemoryChild(t *testing.T) {
	mode := os.Getenv(memChildEnv)
	if mode == "" {
		t.Skip("helper for TestMemoryIsBounded")
	}
	parts := strings.Split(mode, ":")
	s, err := Open(parts[1], Options{})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	ctx := context.Background()
	switch parts[0] {
	case "write":
		mib, _ := strconv.Atoi(parts[2])
		for i := range mib * (1 << 20) / memValue {
			for {
				_, err := s.Put(ctx, "mem", fmt.Sprintf("k%05d", i), memValueOf(i))
				if errors.Is(err, ErrBufferFull) {
					continue // a long compaction holds the flusher: wait, as a client does on 503
				}
				if err != nil {
					fmt.Println("ERR", err)
					os.Exit(3)
				}
				break
			}

		}
	case "read":
		e, ok := s.Get("k00007")
		if !ok || !bytes.Equal(e.Value, memValueOf(7)) {
			fmt.Println("ERR k00007 does not read back")
			os.Exit(3)
		}
	}
	if err := s.Close(); err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	fmt.Println("HWM", vmHWM())
	os.Exit(0)
}

func vmHWM() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

func runMemChild(t *testing.T, mode string) int64 {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), memChildEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "HWM "); ok && err == nil {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatalf("memory child %s: %v\n%s", mode, err, out)
	return 0
}

// TestMemoryIsBounded stores 256 MiB of incompressible values and checks the
// peak RSS of the process stays within the documented bound (values live
// on disk), then reads one key from it in a fresh process under 64 MB.
func TestMemoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 256 MiB (skipped under -short)")
	}
	dir := t.TempDir()
	const mib = 256
	write := runMemChild(t, fmt.Sprintf("write:%s:%d", dir, mib))
	t.Logf("peak RSS writing %d MiB: %.1f MiB", mib, float64(write)/(1<<20))
	if write > 160<<20 {
		t.Errorf("peak RSS writing %d MiB is %.1f MiB, over the 160 MiB bound: the store keeps values in memory", mib, float64(write)/(1<<20))
	}
	read := runMemChild(t, "read:"+dir)
	t.Logf("peak RSS opening the %d MiB store and reading one key: %.1f MiB", mib, float64(read)/(1<<20))
	if read > 64e6 {
		t.Errorf("peak RSS reading one key of a %d MiB store is %.1f MB, over 64 MB", mib, float64(read)/1e6)
	}
}
