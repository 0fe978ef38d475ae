package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Line is one log record.
type Line struct {
	Time   time.Time `json:"time"`
	Stream string    `json:"stream"` // stdout or stderr
	// Text is the bytes the service wrote, without the newline; it need not
	// be valid UTF-8.
	Text string `json:"text"`
	// Partial: the line was longer than the limit and the next record of
	// the stream continues it.
	Partial bool `json:"partial,omitempty"`
}

// ParseRecord parses one record of a log file (without its newline).
func ParseRecord(b []byte) (Line, error) {
	ts, rest, ok1 := bytes.Cut(b, []byte{' '})
	stream, rest, ok2 := bytes.Cut(rest, []byte{' '})
	flags, text, ok3 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 || !ok3 || len(flags) == 0 || len(flags) > 2 {
		return Line{}, fmt.Errorf("log record %.40q: expected TIME STREAM FLAGS TEXT", b)
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return Line{}, fmt.Errorf("log record %.40q: %w", b, err)
	}
	l := Line{Time: t, Stream: string(stream), Text: string(text)}
	switch flags[0] {
	case 'F':
	case 'P':
		l.Partial = true
	default:
		return Line{}, fmt.Errorf("log record %.40q: flags %q", b, flags)
	}
	if len(flags) == 2 {
		if flags[1] != 'q' {
			return Line{}, fmt.Errorf("log record %.40q: flags %q", b, flags)
		}
		if l.Text, err = strconv.Unquote(l.Text); err != nil {
			return Line{}, fmt.Errorf("log record %.40q: quoted text: %w", b, err)
		}
	}
	return l, nil
}

// ReadOptions select the records ReadLogs passes on.
type ReadOptions struct {
	// Since skips records older than it.
	Since time.Time
	// Tail passes only the last Tail records of what exists (0: all); with
	// Follow, every later record too.
	Tail int
	// Follow waits for new records, across rotations, until ctx ends. It
	// sleeps in inotify: nothing wakes it while the service is silent.
	Follow bool
}

// ReadLogs passes the records of a service's log in dir to fn, oldest
// first, from the rotated files then the current one. An error from fn
// stops it and is returned; with Follow it returns ctx's error when ctx
// ends. Records that do not parse (a write cut short by a full disk) are
// skipped.
func ReadLogs(ctx context.Context, dir, service string, opts ReadOptions, fn func(Line) error) error {
	path := LogPath(dir, service)
	var w *inotifyWatch
	if opts.Follow {
		var err error
		if w, err = newInotifyWatch(dir, filepath.Base(path)); err != nil {
			return err
		}
		defer w.close()
	}
	var ring []Line // the last Tail records, when Tail > 0
	emit := func(l Line) error {
		if l.Time.Before(opts.Since) {
			return nil
		}
		if ring != nil {
			if len(ring) == opts.Tail {
				copy(ring, ring[1:])
				ring = ring[:len(ring)-1]
			}
			ring = append(ring, l)
			return nil
		}
		return fn(l)
	}
	if opts.Tail > 0 {
		ring = make([]Line, 0, min(opts.Tail, 4096))
	}
	for _, p := range rotatedFiles(dir, filepath.Base(path)) {
		f, err := os.Open(p)
		if err != nil {
			continue // rotated away meanwhile
		}
		t := tailer{f: f}
		err = t.readAll(emit)
		f.Close()
		if err != nil {
			return err
		}
	}
	var cur tailer
	defer func() {
		if cur.f != nil {
			cur.f.Close()
		}
	}()
	openCurrent := func() error {
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			return nil // not written yet: the watch on dir says when
		}
		if err != nil {
			return err
		}
		cur = tailer{f: f}
		if w != nil {
			return w.watchFile(path)
		}
		return nil
	}
	if err := openCurrent(); err != nil {
		return err
	}
	if cur.f != nil {
		if err := cur.readAll(emit); err != nil {
			return err
		}
	}
	if ring != nil {
		for _, l := range ring {
			if err := fn(l); err != nil {
				return err
			}
		}
		ring = nil
	}
	if !opts.Follow {
		return nil
	}
	for {
		created, err := w.wait(ctx)
		if err != nil {
			return err
		}
		if cur.f != nil {
			if err := cur.readAll(emit); err != nil {
				return err
			}
		}
		if created && !sameFile(cur.f, path) {
			// Rotated: the old file is complete (the writer renames it before
			// it creates the new one); carry on from the new one's start.
			if cur.f != nil {
				cur.f.Close()
				cur.f = nil
			}
			if err := openCurrent(); err != nil {
				return err
			}
			if cur.f != nil {
				if err := cur.readAll(emit); err != nil {
					return err
				}
			}
		}
	}
}

// sameFile reports whether f is the file at path now.
func sameFile(f *os.File, path string) bool {
	if f == nil {
		return false
	}
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

// rotatedFiles lists base.N in dir, oldest (highest N) first.
func rotatedFiles(dir, base string) []string {
	ents, _ := os.ReadDir(dir)
	type rf struct {
		n    int
		path string
	}
	var rs []rf
	for _, e := range ents {
		s, ok := strings.CutPrefix(e.Name(), base+".")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			rs = append(rs, rf{n, filepath.Join(dir, e.Name())})
		}
	}
	slices.SortFunc(rs, func(a, b rf) int { return b.n - a.n })
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.path
	}
	return out
}

// tailer reads complete records from a file that may still grow, keeping
// an unfinished last record for the next read.
type tailer struct {
	f       *os.File
	pending []byte
}

// readBufs are tailers' read buffers. A follower reads at every event of
// its log folder (every service's log file created there wakes each one),
// so a buffer per read made 32 KiB of garbage per service per event: with
// 100 services, hundreds of collections while they start. Pooled, they
// are reused, and an idle follower holds none.
var readBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (t *tailer) readAll(emit func(Line) error) error {
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	for {
		n, err := t.f.Read(buf)
		if n > 0 {
			data := append(t.pending, buf[:n]...)
			start := 0
			for {
				i := bytes.IndexByte(data[start:], '\n')
				if i < 0 {
					break
				}
				if l, perr := ParseRecord(data[start : start+i]); perr == nil {
					if err := emit(l); err != nil {
						return err
					}
				}
				start += i + 1
			}
			t.pending = append(t.pending[:0], data[start:]...)
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// inotifyWatch watches a log dir for the creation of the current file
// (rotation) and the current file for writes.
type inotifyWatch struct {
	f       *os.File // the inotify fd, non-blocking, so Read honours deadlines
	base    string
	fileWd  int
	hasFile bool
}

func newInotifyWatch(dir, base string) (*inotifyWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	w := &inotifyWatch{f: os.NewFile(uintptr(fd), "inotify"), base: base}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MOVED_TO|unix.IN_ONLYDIR); err != nil {
		w.f.Close()
		return nil, fmt.Errorf("inotify_add_watch %s: %w", dir, err)
	}
	return w, nil
}

func (w *inotifyWatch) watchFile(path string) error {
	if w.hasFile {
		_, _ = unix.InotifyRmWatch(int(w.f.Fd()), uint32(w.fileWd))
	}
	wd, err := unix.InotifyAddWatch(int(w.f.Fd()), path, unix.IN_MODIFY)
	if err != nil {
		return fmt.Errorf("inotify_add_watch %s: %w", path, err)
	}
	w.fileWd, w.hasFile = wd, true
	return nil
}

// wait blocks until the current file was written to or created anew
// (created is then true), or ctx ends.
func (w *inotifyWatch) wait(ctx context.Context) (created bool, err error) {
	stop := context.AfterFunc(ctx, func() { _ = w.f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 4096)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			return false, fmt.Errorf("inotify: %w", err)
		}
		woke := false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			name = bytes.TrimRight(name, "\x00")
			switch {
			case ev.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
				if string(name) == w.base {
					created, woke = true, true
				}
			case ev.Mask&unix.IN_MODIFY != 0:
				woke = true
			case ev.Mask&unix.IN_Q_OVERFLOW != 0:
				created, woke = true, true // lost events: look again
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		if woke {
			return created, nil
		}
	}
}

// close releases the watch off the caller's path: the kernel frees an
// inotify instance after an SRCU grace period, which close(2) waits for
// (12 ms traced at a capsule's stop, where the foreground run's echo drains
// its followers before the teardown; docs/PERFORMANCE.md). Nothing reads
// the fd after close is called.
func (w *inotifyWatch) close() { go w.f.Close() }
