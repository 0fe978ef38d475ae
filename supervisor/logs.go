package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Log defaults: at most DefaultLogMaxSize × DefaultLogMaxFiles per service
// (50 MiB), whatever the service writes.
const (
	DefaultLogMaxSize  = 10 << 20
	DefaultLogMaxFiles = 5
	DefaultLogMaxLine  = 16 << 10
)

// LogOptions bound a service's log files.
type LogOptions struct {
	// MaxSize is the size at which the file rotates (DefaultLogMaxSize).
	MaxSize int64
	// MaxFiles counts the current file and the rotated ones
	// (DefaultLogMaxFiles); the oldest is deleted.
	MaxFiles int
	// MaxLine splits longer lines into partial records (DefaultLogMaxLine);
	// it is also all the memory a stream that never sends a newline takes.
	MaxLine int
}

func (o LogOptions) withDefaults() LogOptions {
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultLogMaxSize
	}
	if o.MaxFiles <= 0 {
		o.MaxFiles = DefaultLogMaxFiles
	}
	if o.MaxLine <= 0 {
		o.MaxLine = DefaultLogMaxLine
	}
	return o
}

// LogPath is the current log file of a service; rotated files add .1
// (newest) to .N.
func LogPath(dir, service string) string { return filepath.Join(dir, service+".log") }

// logFile is a service's log: records from both streams, in the order
// they were read, in one size-rotated file.
type logFile struct {
	path string
	opts LogOptions

	mu     sync.Mutex // guards f, size, closed and buf
	f      *os.File
	size   int64
	closed bool
	buf    []byte // one formatted record
}

func openLogFile(dir, service string, o LogOptions) (*logFile, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("log dir: %w", err)
	}
	l := &logFile{path: LogPath(dir, service), opts: o.withDefaults()}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *logFile) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("log file: %w", err)
	}
	l.f, l.size = f, st.Size()
	return nil
}

// rotate shifts path.(N-2) → path.(N-1) … path → path.1 and opens a new
// path. The rename of path comes last, so a reader that follows sees the
// new file created only once the old one has its final name.
func (l *logFile) rotate() error {
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	l.f = nil
	n := l.opts.MaxFiles
	if n <= 1 {
		if err := os.Remove(l.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return l.open()
	}
	_ = os.Remove(l.path + "." + strconv.Itoa(n-1))
	for i := n - 2; i >= 1; i-- {
		from := l.path + "." + strconv.Itoa(i)
		if err := os.Rename(from, l.path+"."+strconv.Itoa(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("log rotation: %w", err)
		}
	}
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("log rotation: %w", err)
	}
	return l.open()
}

// write appends one record. A failed write is counted by the caller, not
// retried: a full disk must not stop supervision.
func (l *logFile) write(t time.Time, stream string, partial bool, text []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return os.ErrClosed
	}
	l.buf = appendRecord(l.buf[:0], t, stream, partial, text)
	if l.f == nil { // a failed rotation: try again
		if err := l.open(); err != nil {
			return err
		}
	}
	if l.size > 0 && l.size+int64(len(l.buf)) > l.opts.MaxSize {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(l.buf)
	l.size += int64(n)
	if cap(l.buf) > 4*DefaultLogMaxLine+64 {
		l.buf = nil // a long quoted record: do not keep its buffer
	}
	return err
}

func (l *logFile) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}

// The record format, one per line:
//
//	2024-05-01T12:00:00.123456789Z stdout F the line as written
//
// time (UTC, RFC 3339 with 9 fraction digits: fixed width, sorts as text),
// stream, flags, a space, the text. Flags: F a full line, P a part of a
// longer line that the next record of the stream continues; with q after
// it (Fq, Pq) the text is a Go quoted string (strconv.Quote), used when the
// line is not valid UTF-8 or holds a control character other than tab and
// ESC, so that every file is valid UTF-8 text and a record is one line.
const recordTime = "2006-01-02T15:04:05.000000000Z07:00"

func appendRecord(b []byte, t time.Time, stream string, partial bool, text []byte) []byte {
	b = t.UTC().AppendFormat(b, recordTime)
	b = append(b, ' ')
	b = append(b, stream...)
	b = append(b, ' ')
	if partial {
		b = append(b, 'P')
	} else {
		b = append(b, 'F')
	}
	if needsQuote(text) {
		b = append(b, "q "...)
		b = strconv.AppendQuote(b, string(text))
	} else {
		b = append(b, ' ')
		b = append(b, text...)
	}
	return append(b, '\n')
}

func needsQuote(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 && c != '\t' && c != 0x1b) || c == 0x7f {
			return true
		}
	}
	return !utf8.Valid(b)
}

// copyLines reads one stream until EOF and writes it as records of at
// most maxLine bytes: a line is a record, a longer one several partial
// records. It holds at most maxLine bytes (growing from 4 KiB), so a
// writer that never sends a newline cannot grow memory. A line without a
// newline at EOF is written as full (an empty one when the line was
// split exactly at the limit), so every line ends with a full record.
func copyLines(r io.Reader, maxLine int, now func() time.Time, emit func(t time.Time, partial bool, text []byte)) {
	buf := make([]byte, min(4096, maxLine))
	n := 0
	open := false // the last record was partial: the line goes on
	for {
		if n == len(buf) {
			if len(buf) < maxLine {
				nb := make([]byte, min(2*len(buf), maxLine))
				copy(nb, buf[:n])
				buf = nb
			} else {
				emit(now(), true, buf[:n])
				n, open = 0, true
			}
		}
		m, err := r.Read(buf[n:])
		if m > 0 {
			t := now()
			data := buf[:n+m]
			// Only the new bytes can hold the first newline.
			start, from := 0, n
			for {
				i := bytes.IndexByte(data[from:], '\n')
				if i < 0 {
					break
				}
				end := from + i
				emit(t, false, data[start:end])
				start, from, open = end+1, end+1, false
			}
			n = copy(buf, data[start:])
		}
		if err != nil {
			if n > 0 || open {
				emit(now(), false, buf[:n]) // EOF ends the line
			}
			return
		}
	}
}
