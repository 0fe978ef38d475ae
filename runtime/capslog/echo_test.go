package capslog

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tori-run/tori-run/supervisor"
)

// The echo of a foreground run prints every line written before it is
// finished, once and in order, even lines its follower had not reached:
// the run ends right after the services' last lines reach their files.
func TestEchoLogsPrintsEveryLineOnce(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	finish := Echo(context.Background(), dir, []string{"a", "b"}, &out, func(err error) { t.Errorf("write failed: %v", err) })
	files := map[string]*os.File{}
	for _, s := range []string{"a", "b"} {
		f, err := os.OpenFile(supervisor.LogPath(dir, s), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files[s] = f
	}
	const n = 3000
	for i := 1; i <= n; i++ {
		for _, s := range []string{"a", "b"} {
			if _, err := files[s].WriteString(record(fmt.Sprintf("%s%d", s, i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	finish() // at once: the followers are still behind
	got := map[string][]string{}
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		name, text, _ := strings.Cut(l, "|")
		got[strings.TrimSpace(name)] = append(got[strings.TrimSpace(name)], strings.TrimSpace(text))
	}
	for _, s := range []string{"a", "b"} {
		if len(got[s]) != n {
			t.Fatalf("service %s: %d lines echoed, want %d", s, len(got[s]), n)
		}
		for i, text := range got[s] {
			if want := fmt.Sprintf("%s%d", s, i+1); text != want {
				t.Fatalf("service %s: line %d is %q, want %q", s, i+1, text, want)
			}
		}
	}
}

func TestEchoLogsWriteErrorStopsOnce(t *testing.T) {
	dir := t.TempDir()
	calls := 0
	finish := Echo(context.Background(), dir, []string{"a"}, failingWriter{}, func(error) { calls++ })
	f, err := os.Create(filepath.Join(dir, "a.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i := 0; i < 10; i++ {
		_, _ = f.WriteString(record("x"))
	}
	finish()
	if calls != 1 {
		t.Fatalf("failed called %d times, want once", calls)
	}
}

// record is a line of a service's log as the supervisor writes it.
func record(text string) string {
	return time.Now().UTC().Format("2006-01-02T15:04:05.000000000Z07:00") + " stdout F " + text + "\n"
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, fmt.Errorf("broken pipe") }
