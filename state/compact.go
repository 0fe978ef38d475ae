package state

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/parquet-go/parquet-go"
)

// maxFiles forces a full compaction whatever the sizes.
const maxFiles = 32

// pickCompaction returns the index of the oldest file to merge with every
// newer one, or -1. A file is merged once the files newer than it weigh at
// least its size divided by ratio: with ratio 1, once the data written since
// it is as large as it, so each byte is rewritten O(log(size/flush)) times
// and the files on disk weigh at most about twice the merged data.
func pickCompaction(files []fileMeta, ratio float64) int {
	if len(files) < 2 {
		return -1
	}
	if len(files) > maxFiles {
		return 0
	}
	var newer int64
	start := -1
	for i := len(files) - 2; i >= 0; i-- {
		newer += files[i+1].Size
		if float64(newer)*ratio >= float64(files[i].Size) {
			start = i
		}
	}
	return start
}

// compact merges the files chosen by pickCompaction into one, streaming
// (a k-way merge of the sorted files: memory does not grow with their
// size), keeping the newest version of each key and every event.
// Tombstones are kept: files replaced by a compaction stay on disk until
// garbage collection drops the manifests listing them, and a reader that
// globs data/*.parquet (the documented DuckDB query) must still see that
// their puts were deleted.
func (s *Store) compact() error {
	start := pickCompaction(s.man.Files, s.opts.CompactRatio)
	if start < 0 {
		return nil
	}
	old := s.files[start:]
	m, err := newMerger(old)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	defer m.close()
	w, err := newDataWriter(s.dataDir, nil)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	type reloc struct {
		op  Op
		key string
		seq uint64
	}
	var rels []reloc
	emit := func(r *Record) error {
		rels = append(rels, reloc{r.Op, r.Key, r.Seq})
		return w.write(r)
	}
	var pending *Record
	cut := s.eventsCut.Load()
	for {
		r, err := m.next()
		if err != nil {
			w.abort()
			return fmt.Errorf("compact: %w", err)
		}
		if r == nil {
			break
		}
		if pending != nil && (r.Op == OpEvent || pending.Key != r.Key) {
			if err := emit(pending); err != nil {
				w.abort()
				return fmt.Errorf("compact: %w", err)
			}
			pending = nil
		}
		if r.Op == OpEvent && r.Seq <= cut {
			continue // past the event retention
		}
		if r.Op == OpEvent {
			if err := emit(r); err != nil {
				w.abort()
				return fmt.Errorf("compact: %w", err)
			}
			continue
		}
		pending = r // sorted by (key, seq): the last one of a key is its newest
	}
	if pending != nil {
		if err := emit(pending); err != nil {
			w.abort()
			return fmt.Errorf("compact: %w", err)
		}
	}
	next := s.man
	next.Generation++
	next.Files = slices.Clone(s.man.Files[:start])
	var d *dataFile
	if len(rels) == 0 {
		w.abort()
	} else {
		meta, err := w.finish(s.opts.syncFile)
		if err != nil {
			return fmt.Errorf("compact %d files: %w", len(old), err)
		}
		s.stats.fsyncs.Add(2)
		if d, err = openDataFile(s.dataDir, meta); err != nil {
			return fmt.Errorf("compact: reopen the merged file: %w", err)
		}
		next.Files = append(next.Files, meta)
	}
	if err := s.install(next); err != nil {
		if d != nil {
			d.close()
		}
		return fmt.Errorf("compact: %w", err)
	}
	s.idxMu.Lock()
	for i, r := range rels {
		s.relocate(&Record{Op: r.op, Key: r.key, Seq: r.seq}, d, int64(i))
	}
	s.idxMu.Unlock()
	s.files = slices.Clone(s.files[:start])
	if d != nil {
		s.files = append(s.files, d)
	}
	for _, o := range old {
		s.cache.drop(o)
		o.close()
	}
	s.stats.compactions.Add(1)
	return nil
}

// merger yields the rows of sorted data files in (key, seq) order.
type merger struct {
	heads []*fileCursor
}

type fileCursor struct {
	r   *parquet.GenericReader[Row]
	buf []Row
	i   int
	cur *Record
	d   *dataFile
}

func newMerger(files []*dataFile) (*merger, error) {
	m := &merger{}
	for _, d := range files {
		// Read ahead about 512 KiB of rows a file: many small rows, or two
		// large ones (values go up to 1 MiB).
		per := max(1, d.meta.Size/max(1, d.meta.Rows))
		c := &fileCursor{r: parquet.NewGenericReader[Row](d.f), buf: make([]Row, min(256, max(2, (512<<10)/per))), d: d}
		if err := c.advance(); err != nil {
			m.close()
			return nil, err
		}
		m.heads = append(m.heads, c)
	}
	return m, nil
}

func (c *fileCursor) advance() error {
	if c.i >= len(c.buf) || c.cur == nil && c.i == 0 {
		n, err := c.r.Read(c.buf[:cap(c.buf)])
		c.buf, c.i = c.buf[:n], 0
		if n == 0 {
			c.cur = nil
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: data file %s: %w", ErrCorrupt, c.d.path, err)
			}
			return nil
		}
	}
	r, err := fromRow(&c.buf[c.i])
	if err != nil {
		return fmt.Errorf("%w: data file %s: %w", ErrCorrupt, c.d.path, err)
	}
	r.Value = slices.Clone(r.Value)
	c.cur = &r
	c.i++
	return nil
}

// next returns the smallest row by (key, seq), or nil at the end.
func (m *merger) next() (*Record, error) {
	var best *fileCursor
	for _, c := range m.heads {
		if c.cur == nil {
			continue
		}
		if best == nil || c.cur.Key < best.cur.Key || c.cur.Key == best.cur.Key && c.cur.Seq < best.cur.Seq {
			best = c
		}
	}
	if best == nil {
		return nil, nil
	}
	r := best.cur
	if err := best.advance(); err != nil {
		return nil, err
	}
	return r, nil
}

func (m *merger) close() {
	for _, c := range m.heads {
		c.r.Close()
	}
}
