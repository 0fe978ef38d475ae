package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	all := make([]byte, 0, 256)
	for i := range 256 {
		if i != '\n' {
			all = append(all, byte(i))
		}
	}
	at := time.Date(2024, 5, 1, 12, 0, 0, 5, time.FixedZone("X", 3600))
	for _, tc := range []struct {
		text    string
		partial bool
		quoted  bool
	}{
		{"plain text, with\ttab", false, false},
		{"\x1b[31mcolour\x1b[0m stays readable", false, false},
		{"ünïcødé ✓", true, false},
		{"", false, false},
		{"carriage\rreturn", false, true},
		{"nul\x00byte", false, true},
		{"bad utf8 \xff\xfe", true, true},
		{string(all), false, true},
	} {
		rec := appendRecord(nil, at, "stderr", tc.partial, []byte(tc.text))
		if bytes.Count(rec, []byte{'\n'}) != 1 || !bytes.HasSuffix(rec, []byte{'\n'}) {
			t.Fatalf("%q: record %q is not one line", tc.text, rec)
		}
		if q := bytes.Contains(rec[:45], []byte(" Fq ")) || bytes.Contains(rec[:45], []byte(" Pq ")); q != tc.quoted {
			t.Errorf("%q: quoted=%v in %q", tc.text, q, rec)
		}
		l, err := ParseRecord(rec[:len(rec)-1])
		if err != nil {
			t.Fatal(err)
		}
		if l.Text != tc.text || l.Partial != tc.partial || l.Stream != "stderr" || !l.Time.Equal(at) {
			t.Errorf("%q: parsed %+v", tc.text, l)
		}
	}
	rec := appendRecord(nil, at, "stdout", false, []byte("x"))
	if want := "2024-05-01T11:00:00.000000005Z stdout F x\n"; string(rec) != want {
		t.Fatalf("record %q, want %q", rec, want)
	}
	for _, bad := range []string{"", "2024-05-01T11:00:00Z stdout", "nottime stdout F x", "2024-05-01T11:00:00Z stdout Z x", `2024-05-01T11:00:00Z stdout Fq "x`} {
		if _, err := ParseRecord([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

type rec struct {
	partial bool
	text    string
}

func collectLines(r io.Reader, maxLine int) []rec {
	var out []rec
	copyLines(r, maxLine, time.Now, func(_ time.Time, partial bool, text []byte) {
		if cap(text) > maxLine {
			panic(fmt.Sprintf("buffer of %d bytes for a %d limit", cap(text), maxLine))
		}
		out = append(out, rec{partial, string(text)})
	})
	return out
}

func TestCopyLinesSplitsLongLines(t *testing.T) {
	got := collectLines(strings.NewReader("abcdefghijklmnopqrstuvwxyz\nshort\n\nexactly8\ntail"), 8)
	want := []rec{{true, "abcdefgh"}, {true, "ijklmnop"}, {true, "qrstuvwx"}, {false, "yz"}, {false, "short"}, {false, ""},
		{true, "exactly8"}, {false, ""}, {false, "tail"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%v\nwant %v", got, want)
	}
}

// oneByteReader hands out its input one byte per Read, as a slow pipe.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:1]) }

func TestCopyLinesNeverNewline(t *testing.T) {
	const size, maxLine = 1 << 20, 16 << 10
	got := collectLines(io.LimitReader(neverNewline{}, size), maxLine) // panics past maxLine
	total := 0
	for i, r := range got {
		total += len(r.text)
		if r.partial != (i < len(got)-1) || len(r.text) > maxLine {
			t.Fatalf("record %d: partial=%v len %d", i, r.partial, len(r.text))
		}
	}
	// 64 partial records, then an empty full one: EOF ended the line.
	if total != size || len(got) != size/maxLine+1 || got[len(got)-1].text != "" {
		t.Fatalf("%d bytes in %d records", total, len(got))
	}
	// Lines cut across reads still come out whole.
	got = collectLines(oneByteReader{strings.NewReader("one\ntwo\n")}, 8)
	if fmt.Sprint(got) != fmt.Sprint([]rec{{false, "one"}, {false, "two"}}) {
		t.Fatalf("%v", got)
	}
}

type neverNewline struct{}

func (neverNewline) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func writeN(t *testing.T, l *logFile, from, n int, at time.Time) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := l.write(at.Add(time.Duration(i)*time.Second), "stdout", false, fmt.Appendf(nil, "line %04d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

func readAll(t *testing.T, dir, svc string, o ReadOptions) []string {
	t.Helper()
	var out []string
	if err := ReadLogs(context.Background(), dir, svc, o, func(l Line) error {
		out = append(out, l.Text)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLogRotation(t *testing.T) {
	dir := t.TempDir()
	l, err := openLogFile(dir, "web", LogOptions{MaxSize: 1000, MaxFiles: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	// A record is 30 (time) + 1 + 6 + 3 + 9 + 1 = 50 bytes: 20 per file.
	writeN(t, l, 0, 100, t0)
	for _, name := range []string{"web.log", "web.log.1", "web.log.2"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Size() > 1000 {
			t.Fatalf("%s: %v %v", name, st, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "web.log.3")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("web.log.3 kept: %v", err)
	}
	got := readAll(t, dir, "web", ReadOptions{})
	if len(got) != 60 || got[0] != "line 0040" || got[59] != "line 0099" {
		t.Fatalf("%d lines: %q … %q", len(got), got[0], got[len(got)-1])
	}
	for i := range got {
		if got[i] != fmt.Sprintf("line %04d", 40+i) {
			t.Fatalf("line %d: %q", i, got[i])
		}
	}
	// Reopening appends to the current file.
	l.close()
	l2, err := openLogFile(dir, "web", LogOptions{MaxSize: 1000, MaxFiles: 3})
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, l2, 100, 1, t0)
	l2.close()
	if got := readAll(t, dir, "web", ReadOptions{Tail: 2}); fmt.Sprint(got) != "[line 0099 line 0100]" {
		t.Fatalf("%q", got)
	}
	if err := l.write(t0, "stdout", false, []byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

func TestReadLogsTailAndSince(t *testing.T) {
	dir := t.TempDir()
	l, err := openLogFile(dir, "db", LogOptions{MaxSize: 1000, MaxFiles: 5})
	if err != nil {
		t.Fatal(err)
	}
	writeN(t, l, 0, 50, t0)
	l.close()
	if got := readAll(t, dir, "db", ReadOptions{Tail: 3}); fmt.Sprint(got) != "[line 0047 line 0048 line 0049]" {
		t.Fatalf("tail 3: %q", got)
	}
	if got := readAll(t, dir, "db", ReadOptions{Since: t0.Add(45 * time.Second)}); len(got) != 5 || got[0] != "line 0045" {
		t.Fatalf("since: %q", got)
	}
	if got := readAll(t, dir, "db", ReadOptions{Since: t0.Add(10 * time.Second), Tail: 100}); len(got) != 40 || got[0] != "line 0010" {
		t.Fatalf("since+tail: %d %q", len(got), got[0])
	}
	if got := readAll(t, dir, "nothing", ReadOptions{}); len(got) != 0 {
		t.Fatalf("%q", got)
	}
	stop := errors.New("enough")
	n := 0
	err = ReadLogs(context.Background(), dir, "db", ReadOptions{}, func(Line) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("%v after %d", err, n)
	}
}

func TestReadLogsFollowAcrossRotation(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := make(chan string, 1000)
	done := make(chan error, 1)
	// Follow from before the file exists.
	go func() {
		done <- ReadLogs(ctx, dir, "svc", ReadOptions{Follow: true}, func(l Line) error {
			lines <- l.Text
			return nil
		})
	}()
	next := func() string {
		select {
		case s := <-lines:
			return s
		case err := <-done:
			t.Fatalf("follow ended: %v", err)
		case <-time.After(waitLimit):
			t.Fatal("follow: nothing within the limit")
		}
		return ""
	}
	// Let the follower set up its watch on the empty dir before writing;
	// it then needs nothing else to see the file appear.
	time.Sleep(20 * time.Millisecond)
	l, err := openLogFile(dir, "svc", LogOptions{MaxSize: 500, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	// 10 records per file: several rotations; read each batch as it comes.
	for batch := range 5 {
		writeN(t, l, batch*7, 7, t0)
		for i := batch * 7; i < batch*7+7; i++ {
			if got, want := next(), fmt.Sprintf("line %04d", i); got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow returned %v", err)
	}
}
