package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/tori-run/tori-run/internal/atomicfile"
)

const walSuffix = ".wal"

func segmentName(index uint64) string { return fmt.Sprintf("%020d%s", index, walSuffix) }

// wal is the open segment of the write-ahead log. Only the committer
// goroutine uses it.
type wal struct {
	dir   string
	sync  syncFunc
	index uint64 // of the open segment
	f     *os.File
	size  int64
	// good is the size up to which the segment holds whole, durable frames.
	good int64
	// broken: a write or fsync failed; the segment must be cut back to good
	// and replaced (restart) before the log takes another write. Until then
	// nothing rotates it: a segment followed by another must end cleanly.
	broken bool
}

// openWAL starts a new, empty segment with the given index.
func openWAL(dir string, index uint64, sync syncFunc) (*wal, error) {
	w := &wal{dir: dir, sync: sync}
	if err := w.create(index); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *wal) path() string { return filepath.Join(w.dir, segmentName(w.index)) }

func (w *wal) create(index uint64) error {
	path := filepath.Join(w.dir, segmentName(index))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create log segment: %w", err)
	}
	// The segment's name must be durable before any write to it is acknowledged.
	if err := atomicfile.SyncDir(w.dir); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	w.f, w.index, w.size, w.good = f, index, 0, 0
	return nil
}

// write appends frames and makes them durable: one write, one fdatasync.
// On failure the segment is marked broken and the partial write is cut off
// at once (best effort; restart does it again, durably).
func (w *wal) write(frames []byte) error {
	if w.broken {
		return fmt.Errorf("log segment %s is waiting to be cut back after a failed write", w.path())
	}
	n, err := w.f.Write(frames)
	w.size += int64(n)
	if err != nil {
		err = fmt.Errorf("append %d bytes to %s: %w", len(frames), w.path(), err)
	} else {
		err = w.sync(w.f)
	}
	if err != nil {
		w.broken = true
		if w.f.Truncate(w.good) == nil {
			w.size = w.good
		}
		return err
	}
	w.good = w.size
	return nil
}

// restart repairs a broken segment: it cuts it back to its last durable
// frame, makes that durable, and starts the next segment. The frames before
// good were fsynced before the failure; the PostgreSQL lesson (an fsync
// that failed is not retried and trusted) is kept by never appending to
// the failed segment again. It returns the path of the old segment.
func (w *wal) restart() (string, error) {
	if err := w.f.Truncate(w.good); err != nil {
		return "", fmt.Errorf("cut log segment %s back to byte %d after a failed write: %w", w.path(), w.good, err)
	}
	if err := w.sync(w.f); err != nil {
		return "", fmt.Errorf("after cutting it back to byte %d: %w", w.good, err)
	}
	w.size = w.good
	w.broken = false
	old, err := w.rotate()
	if err != nil {
		w.broken = true
		return "", err
	}
	return old, nil
}

// rotate starts the next segment, then closes the open one (whose frames are
// all durable already); it returns the path of the closed one. If the next
// segment cannot be created, the open one stays open.
func (w *wal) rotate() (string, error) {
	if w.broken {
		return "", fmt.Errorf("log segment %s is waiting to be cut back after a failed write", w.path())
	}
	old, oldF := w.path(), w.f
	if err := w.create(w.index + 1); err != nil {
		return "", err
	}
	// Every frame of old was fdatasynced; a close error cannot lose them.
	_ = oldF.Close()
	return old, nil
}

func (w *wal) close() error {
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("close log segment %s: %w", w.path(), err)
	}
	return nil
}

// segment is a log segment found on disk at recovery.
type segment struct {
	index  uint64
	path   string
	maxSeq uint64 // 0 when it holds no record
}

// listSegments returns the log segments in dir, oldest first.
func listSegments(dir string) ([]segment, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read log folder: %w", err)
	}
	var segs []segment
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, walSuffix) {
			continue
		}
		idx, err := strconv.ParseUint(strings.TrimSuffix(name, walSuffix), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: unexpected file %s in the log folder", ErrCorrupt, filepath.Join(dir, name))
		}
		segs = append(segs, segment{index: idx, path: filepath.Join(dir, name)})
	}
	slices.SortFunc(segs, func(a, b segment) int { return cmpUint(a.index, b.index) })
	return segs, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// errTorn reports where a segment stops holding whole, valid frames.
type errTorn struct {
	offset int64
	reason string
}

func (e *errTorn) Error() string { return fmt.Sprintf("torn at byte %d: %s", e.offset, e.reason) }

// readSegment calls fn with the records of every valid frame of the segment
// at path, in order. At the first frame that is not valid it returns
// *errTorn if what follows is a torn tail (a crash in the middle of an
// append: the file ends inside the frame, or the rest of the file is
// zeros), or an error wrapping ErrCorrupt naming the file and offset if it
// is damage (a whole frame that fails its checksum, a damaged length, or
// valid frames after the bad one): a torn write is never acknowledged,
// damage may hide acknowledged writes.
func readSegment(path string, fn func([]Record) error) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read log segment: %w", err)
	}
	var off int64
	for int(off) < len(data) {
		recs, n, err := frameAt(data, int(off))
		if err != nil {
			if torn := classifyBad(data, int(off)); torn != nil {
				return torn
			}
			return fmt.Errorf("%w: log segment %s: bad frame at byte %d (%v), not a torn tail: %s", ErrCorrupt, path, off, err, damageHint)
		}
		if err := fn(recs); err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

const damageHint = "the file is damaged; tori-run state check NAME tells more, tori-run state repair NAME keeps every intact record"

// frameAt decodes the frame at off; it returns its records and length.
func frameAt(data []byte, off int) ([]Record, int, error) {
	rest := data[off:]
	if len(rest) < frameHeader {
		return nil, 0, errors.New("incomplete frame header")
	}
	n := binary.LittleEndian.Uint32(rest)
	sum := binary.LittleEndian.Uint32(rest[4:])
	if n > maxFrame || int64(n) > int64(len(rest)-frameHeader) {
		return nil, 0, fmt.Errorf("frame of %d bytes, %d remain", n, len(rest)-frameHeader)
	}
	payload := rest[frameHeader : frameHeader+int(n)]
	if crc32.Checksum(payload, castagnoli) != sum {
		return nil, 0, errors.New("checksum mismatch")
	}
	recs, err := decodePayload(payload)
	if err != nil {
		return nil, 0, fmt.Errorf("frame passes its checksum but does not decode: %w", err)
	}
	return recs, frameHeader + int(n), nil
}

// classifyBad returns *errTorn if the bad frame at off is a torn tail, nil
// if it is damage.
func classifyBad(data []byte, off int) *errTorn {
	rest := data[off:]
	if zeroTail(data, off) {
		return &errTorn{int64(off), "zeros to the end of the file"}
	}
	if len(rest) < frameHeader {
		return &errTorn{int64(off), "incomplete frame header"}
	}
	n := binary.LittleEndian.Uint32(rest)
	sum := binary.LittleEndian.Uint32(rest[4:])
	if n <= maxFrame && int64(n) <= int64(len(rest)-frameHeader) {
		return nil // a whole frame with a bad checksum: damage
	}
	if crc32.Checksum(rest[frameHeader:], castagnoli) == sum {
		return nil // the frame is all there; its length was damaged
	}
	if nextFrame(data, off+1) >= 0 {
		return nil // valid frames follow the bad one
	}
	return &errTorn{int64(off), fmt.Sprintf("frame of %d bytes, %d remain", n, len(rest)-frameHeader)}
}

// zeroTail reports whether the file is zeros from a page boundary inside or
// at the start of the frame at off to its end: a crash after the size of
// the file was extended but before the data reached the disk.
func zeroTail(data []byte, off int) bool {
	const page = 4096
	end := len(data)
	z := end
	for z > off && data[z-1] == 0 {
		z--
	}
	if z == end {
		return false
	}
	if z == off {
		return true
	}
	p := (z + page - 1) / page * page
	return p < end && p >= off && p-z < page && frameEnds(data, off) > p
}

// frameEnds returns where the frame at off claims to end (or len(data)).
func frameEnds(data []byte, off int) int {
	if len(data)-off < frameHeader {
		return len(data)
	}
	return off + frameHeader + int(binary.LittleEndian.Uint32(data[off:]))
}

// nextFrame returns the offset of the first valid frame at or after from, or -1.
func nextFrame(data []byte, from int) int {
	for o := from; o+frameHeader+4 <= len(data); o++ {
		n := binary.LittleEndian.Uint32(data[o:])
		if n < 4 || n > maxFrame || int64(n) > int64(len(data)-o-frameHeader) {
			continue
		}
		if _, _, err := frameAt(data, o); err == nil {
			return o
		}
	}
	return -1
}

// scanSegment reads every intact frame of a segment, skipping damage: it
// calls fn with each frame's records and returns the byte ranges it could
// not read (what repair drops).
func scanSegment(data []byte, fn func(off int, recs []Record)) (bad [][2]int) {
	off := 0
	for off < len(data) {
		recs, n, err := frameAt(data, off)
		if err == nil {
			fn(off, recs)
			off += n
			continue
		}
		next := nextFrame(data, off+1)
		if next < 0 {
			next = len(data)
		}
		bad = append(bad, [2]int{off, next})
		off = next
	}
	return bad
}

// replayWAL reads every segment in dir and passes the records after seq
// `after` to apply, checking that sequence numbers follow each other. A torn
// tail in the last segment is cut off (it was never acknowledged); anywhere
// else it is corruption. It returns the segments with their highest seq.
func replayWAL(dir string, after uint64, sync syncFunc, apply func(Record)) (segs []segment, truncated int64, err error) {
	segs, err = listSegments(dir)
	if err != nil {
		return nil, 0, err
	}
	next := after + 1
	for i := range segs {
		s := &segs[i]
		err := readSegment(s.path, func(recs []Record) error {
			for _, r := range recs {
				s.maxSeq = r.Seq
				if r.Seq < next {
					continue // already in a Parquet file
				}
				if r.Seq != next {
					return fmt.Errorf("%w: %s: record seq %d, expected %d", ErrCorrupt, s.path, r.Seq, next)
				}
				next++
				apply(r)
			}
			return nil
		})
		var torn *errTorn
		if errors.As(err, &torn) && i == len(segs)-1 {
			truncated, err = truncateSegment(s.path, torn.offset, sync)
		} else if torn != nil {
			err = fmt.Errorf("%w: log segment %s (not the last one) %w: %s", ErrCorrupt, s.path, err, damageHint)
		}
		if err != nil {
			return nil, 0, err
		}
	}
	return segs, truncated, nil
}

// truncateSegment cuts the torn tail of the last segment; it returns how many
// bytes were cut.
func truncateSegment(path string, off int64, sync syncFunc) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("open log segment to cut its torn tail: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	if err := f.Truncate(off); err != nil {
		return 0, fmt.Errorf("cut torn tail of %s at byte %d: %w", path, off, err)
	}
	if err := sync(f); err != nil {
		return 0, err
	}
	return st.Size() - off, nil
}
