package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestQuotaRefusesWritesButNotDeletes(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{Quota: 64 << 10, FlushInterval: -1})
	defer closeT(t, s)
	ctx := context.Background()
	val := strings.Repeat("q", 4<<10)
	var err error
	n := 0
	for ; n < 100; n++ {
		if _, err = s.Put(ctx, "svc", fmt.Sprintf("k%03d", n), []byte(val)); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrQuota) || !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "quota is 65536") {
		t.Fatalf("after %d writes of 4 KiB into a 64 KiB quota: %v, want ErrQuota naming the quota", n, err)
	}
	if n == 0 || n > 16 {
		t.Fatalf("%d writes of 4 KiB fit a 64 KiB quota", n)
	}
	if _, err := s.AppendEvent(ctx, "svc", []byte(`"`+val+`"`)); !errors.Is(err, ErrQuota) {
		t.Errorf("event over quota: %v, want ErrQuota", err)
	}
	for i := range n {
		if _, err := s.Delete(ctx, "svc", fmt.Sprintf("k%03d", i)); err != nil {
			t.Fatalf("a delete over quota must go through: %v", err)
		}
	}
	st := s.Stats()
	if st.Quota != 64<<10 || st.Used <= 0 || st.QuotaRefused < 2 {
		t.Errorf("stats %+v: want the quota, the bytes used and the refusals", st)
	}
	// A flush and a compaction reclaim the space the deleted keys took.
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Used > 32<<10 && time.Now().Before(deadline) {
		if _, err := s.Put(ctx, "svc", "small", []byte("1")); err == nil {
			_ = s.Flush(ctx)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := s.Put(ctx, "svc", "again", []byte(val)); err != nil {
		t.Errorf("after deleting everything and compacting (used %d): %v", s.Stats().Used, err)
	}
}

func TestEventRetention(t *testing.T) {
	dir := t.TempDir()
	opts := Options{EventRetentionCount: 3, Buffer: 4, FlushInterval: -1}
	s := openT(t, dir, opts)
	ctx := context.Background()
	for i := range 10 {
		if _, err := s.AppendEvent(ctx, "svc", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Store, when string) {
		t.Helper()
		evs := s.Events(0, 100)
		var got []string
		for _, e := range evs {
			got = append(got, string(e.Value))
		}
		if strings.Join(got, ",") != "7,8,9" {
			t.Errorf("%s: events %v, want the newest 3: 7,8,9", when, got)
		}
	}
	check(s, "open")
	closeT(t, s)
	s = openT(t, dir, opts)
	check(s, "after reopen")
	closeT(t, s)

	s = openT(t, dir, Options{EventRetentionAge: time.Nanosecond})
	defer closeT(t, s)
	if evs := s.Events(0, 100); len(evs) != 0 {
		t.Errorf("with a retention age of 1ns, %d events are left", len(evs))
	}
}

func TestSinceMaxUint64ReturnsNothing(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	defer closeT(t, s)
	if _, err := s.AppendEvent(context.Background(), "svc", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if evs := s.Events(^uint64(0), 10); len(evs) != 0 {
		t.Errorf("Events(2^64-1) = %v, want none (since+1 must not wrap to 0)", evs)
	}
}

func TestNewFoldersAreSyncedIntoTheirParent(t *testing.T) {
	if _, err := exec.LookPath("strace"); err != nil {
		t.Skip("needs strace")
	}
	if os.Getenv("TORI_STATE_MKDIR_CHILD") != "" {
		s, err := Open(os.Getenv("TORI_STATE_MKDIR_CHILD"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		return
	}
	root := t.TempDir()
	dir := filepath.Join(root, "a", "cap")
	cmd := exec.Command("strace", "-f", "-e", "trace=openat,fsync,mkdir,mkdirat", "-o", filepath.Join(root, "trace"), os.Args[0], "-test.run=^TestNewFoldersAreSyncedIntoTheirParent$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TORI_STATE_MKDIR_CHILD="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	trace, _ := os.ReadFile(filepath.Join(root, "trace"))
	// Each new folder's parent is opened and fsynced after the mkdir.
	for _, parent := range []string{root, filepath.Join(root, "a"), dir} {
		re := regexp.MustCompile(`openat\(AT_FDCWD, "` + regexp.QuoteMeta(parent) + `", [^)]*\) = (\d+)`)
		ms := re.FindAllStringSubmatch(string(trace), -1)
		synced := false
		for _, m := range ms {
			if strings.Contains(string(trace), "fsync("+m[1]+")") {
				synced = true
			}
		}
		if !synced {
			t.Errorf("folder %s was not fsynced after a folder was created in it", parent)
		}
	}
}
