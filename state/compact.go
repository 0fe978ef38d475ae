package state

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/parquet-go/parquet-go"
)

const (
	// maxFiles forces a compaction whatever the sizes.
	maxFiles = 32
	// mergeBudget bounds what the files one compaction merges hold in
	// memory at once (each a read-ahead and a decoded page, about
	// mergeCost): when flushes have piled files of large values up behind a
	// long compaction, the next one does not merge them all at once.
	mergeBudget = 4 << 20
	// minMerge files are merged even over mergeBudget; past maxFiles, the
	// lightest run of minMerge files is.
	minMerge = 4
)

// mergeCost estimates the memory a file takes while it is merged: its
// read-ahead and a page, a few of its rows, at least 64 KiB.
func mergeCost(f fileMeta) int64 {
	return max(64<<10, 4*f.Size/max(1, f.Rows))
}

// pickCompaction returns the run of files to merge, files[start:end], or
// start -1. Among the newest files that fit mergeBudget (at least
// minMerge), a file is merged with every newer one once those weigh at
// least its size divided by ratio: with ratio 1, once the data written
// since it is as large as it, so each byte is rewritten O(log(size/flush))
// times and the files on disk weigh at most about twice the merged data.
// Under sustained writes the compactor, which runs beside the flusher, finds
// several new files at once and merges them in one pass (a fan-in above 2).
// Past maxFiles files, the lightest run of minMerge files is merged.
func pickCompaction(files []fileMeta, ratio float64) (start, end int) {
	n := len(files)
	if n < 2 {
		return -1, 0
	}
	if n > maxFiles {
		best, bestSize := 0, int64(-1)
		var sum int64
		for i := range files {
			sum += files[i].Size
			if i >= minMerge {
				sum -= files[i-minMerge].Size
			}
			if i >= minMerge-1 && (bestSize < 0 || sum < bestSize) {
				best, bestSize = i-minMerge+1, sum
			}
		}
		return best, best + minMerge
	}
	lo := n - 1
	for cost := mergeCost(files[lo]); lo > 0; lo-- {
		cost += mergeCost(files[lo-1])
		if cost > mergeBudget && n-lo >= minMerge {
			break
		}
	}
	var newer int64
	start = -1
	for i := n - 2; i >= lo; i-- {
		newer += files[i+1].Size
		if float64(newer)*ratio >= float64(files[i].Size) {
			start = i
		}
	}
	return start, n
}

// compactor runs compactions on a goroutine of its own, woken by the
// flusher after each flush, until compactCh is closed. Flushes go on while it
// merges: each appends its file to the manifest, and the compaction replaces
// only the run of files it merged, where they are.
func (s *Store) compactor(done chan struct{}) {
	defer close(done)
	for range s.compactCh {
		// One compaction a wake-up, as when the flusher compacted: a run
		// left behind (mergeBudget) waits for the next flush. Looping here
		// chains compactions that rewrite the file just written, and
		// garbage collection keeps every input of the last manifests.
		if _, err := s.compact(); err != nil {
			// The data is safe in the files already listed; a failed
			// compaction leaves only garbage that the next GC removes.
			s.log.Error().Err(err).Str("dir", s.dir).Msg("state: compaction failed")
		}
		s.compactsDue.Add(-1)
	}
}

// compact merges the files chosen by pickCompaction into one, streaming
// (a k-way merge of the sorted files: memory does not grow with their
// size), keeping the newest version of each key and every event.
// Tombstones are kept: files replaced by a compaction stay on disk until
// garbage collection drops the manifests listing them, and a reader that
// globs data/*.parquet (the documented DuckDB query) must still see that
// their puts were deleted. It holds manMu only to choose the files and to
// install the result: flushes that land meanwhile stay after it.
func (s *Store) compact() (merged bool, err error) {
	s.manMu.Lock()
	start, end := pickCompaction(s.man.Files, s.opts.CompactRatio)
	var old []*dataFile
	if start >= 0 {
		old = slices.Clone(s.files[start:end])
	}
	s.manMu.Unlock()
	if start < 0 {
		return false, nil
	}
	m, err := newMerger(old)
	if err != nil {
		return false, fmt.Errorf("compact: %w", err)
	}
	defer m.close()
	w, err := newDataWriter(s.dataDir, nil)
	if err != nil {
		return false, fmt.Errorf("compact: %w", err)
	}
	w.claims = &s.claims
	type reloc struct {
		op     Op
		key    string
		seq    uint64
		src    *dataFile // the file and row the record came from
		srcRow int64
	}
	var rels []reloc
	var pendingSrc *fileCursor
	var pendingRow int64
	emit := func(r *Record, src *fileCursor, srcRow int64) error {
		rels = append(rels, reloc{r.Op, r.Key, r.Seq, src.d, srcRow})
		return w.write(r)
	}
	var pending *Record
	cut := s.eventsCut.Load()
	for {
		r, src, srcRow, err := m.next()
		if err != nil {
			w.abort()
			return false, fmt.Errorf("compact: %w", err)
		}
		if r == nil {
			break
		}
		if pending != nil && (r.Op == OpEvent || pending.Key != r.Key) {
			if err := emit(pending, pendingSrc, pendingRow); err != nil {
				w.abort()
				return false, fmt.Errorf("compact: %w", err)
			}
			pending = nil
		}
		if r.Op == OpEvent && r.Seq <= cut {
			continue // past the event retention
		}
		if r.Op == OpEvent {
			if err := emit(r, src, srcRow); err != nil {
				w.abort()
				return false, fmt.Errorf("compact: %w", err)
			}
			continue
		}
		pending, pendingSrc, pendingRow = r, src, srcRow // sorted by (key, seq): the last one of a key is its newest
	}
	if pending != nil {
		if err := emit(pending, pendingSrc, pendingRow); err != nil {
			w.abort()
			return false, fmt.Errorf("compact: %w", err)
		}
	}
	var d *dataFile
	var mergedMeta []fileMeta
	if s.opts.compactHook != nil {
		s.opts.compactHook("written")
	}
	if len(rels) == 0 {
		w.abort()
	} else {
		meta, err := w.finish(s.opts.syncFile)
		if err != nil {
			return false, fmt.Errorf("compact %d files: %w", len(old), err)
		}
		defer s.claims.remove(meta.Name) // listed, or garbage once it fails
		s.stats.fsyncs.Add(2)
		if d, err = openDataFile(s.dataDir, meta); err != nil {
			return false, fmt.Errorf("compact: reopen the merged file: %w", err)
		}
		mergedMeta = []fileMeta{meta}
		if s.opts.compactHook != nil {
			s.opts.compactHook("finished")
		}
	}
	if err := s.replaceFiles(start, old, d, mergedMeta); err != nil {
		if d != nil {
			d.close()
		}
		return false, fmt.Errorf("compact: %w", err)
	}
	var relErr error
	if d != nil {
		relocate := func(start, end int64) {
			s.idxMu.Lock()
			for i := start; i < end; i++ {
				r := &rels[i]
				if err := s.relocate(&Record{Op: r.op, Key: r.key, Seq: r.seq}, d, i); err != nil && relErr == nil {
					relErr = err
				}
			}
			s.idxMu.Unlock()
		}
		s.moveCache(d, old, func(row int64) (*dataFile, int64) { return rels[row].src, rels[row].srcRow }, relocate)
	}
	if relErr != nil {
		// openDataFile checked the pages cover every row: a bug, not damage.
		s.log.Error().Err(relErr).Str("file", d.path).Msg("state: compaction: an index entry was not moved")
	}
	for _, o := range old {
		o.close() // first: a reader that loads one of its pages now gets errMoved, never caches it
		s.cache.drop(o)
	}
	s.stats.compactions.Add(1)
	return true, nil
}

// replaceFiles installs a manifest where the files old, found at start,
// are replaced by d (nil: by nothing; merged is d's meta). Only the
// compactor removes files and the flusher only appends them, so old are
// still where the compaction found them.
func (s *Store) replaceFiles(start int, old []*dataFile, d *dataFile, merged []fileMeta) error {
	s.manMu.Lock()
	defer s.manMu.Unlock()
	end := start + len(old)
	if end > len(s.files) || !slices.Equal(s.files[start:end], old) {
		return fmt.Errorf("the %d files merged from position %d are no longer listed there (a bug)", len(old), start)
	}
	next := s.man
	next.Generation++
	next.Files = slices.Concat(s.man.Files[:start], merged, s.man.Files[end:])
	if err := s.install(next); err != nil {
		return err
	}
	files := slices.Clone(s.files[:start])
	if d != nil {
		files = append(files, d)
	}
	s.files = append(files, s.files[end:]...)
	return nil
}

// moveCache points the index at d, the file a compaction merged from old,
// one page at a time (relocate), caching first each page of d that it can
// copy from the cached pages of old (source gives the file and row each row
// of d came from): a compaction does not make the values read so far cold.
// The old pages leave the cache's accounting but stay readable until the
// index no longer points at them, and are let go page by page, so the
// memory held stays about CacheBytes.
func (s *Store) moveCache(d *dataFile, old []*dataFile, source func(row int64) (*dataFile, int64), relocate func(start, end int64)) {
	taken := map[*pageRef]*cachedPage{}
	for _, o := range old {
		maps.Copy(taken, s.cache.detach(o))
	}
	// Where each row of d is in the cached old pages (nil: not cached), and
	// the last row of d that takes a value from each old page.
	type at struct {
		p *pageRef
		i int32
	}
	var srcs []at
	last := map[*pageRef]int64{}
	if len(taken) > 0 {
		srcs = make([]at, d.meta.Rows)
		for row := range d.meta.Rows {
			o, r := source(row)
			if p, i, err := o.locate(r); err == nil && taken[p] != nil {
				srcs[row] = at{p, i}
				last[p] = row
			}
		}
	}
	release := map[int64][]*pageRef{}
	for p, row := range last {
		release[row] = append(release[row], p)
	}
	for p := range taken {
		if _, ok := last[p]; !ok {
			s.cache.release(p) // holds no row of d (every version in it was replaced)
		}
	}
	value := func(row int64) ([]byte, bool) {
		if srcs == nil || srcs[row].p == nil {
			return nil, false
		}
		if cp := taken[srcs[row].p]; cp != nil {
			return cp.value(srcs[row].i)
		}
		return nil, false
	}
	s.warm(d, value, func(start, end int64) {
		relocate(start, end)
		for row := start; row < end; row++ {
			for _, p := range release[row] {
				delete(taken, p)
				s.cache.release(p)
			}
		}
	})
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
	row int64 // cur's row in d
	d   *dataFile
}

func newMerger(files []*dataFile) (*merger, error) {
	m := &merger{}
	for _, d := range files {
		// Read ahead about 512 KiB of rows a file: many small rows, or two
		// large ones (values go up to 1 MiB).
		per := max(1, d.meta.Size/max(1, d.meta.Rows))
		c := &fileCursor{r: parquet.NewGenericReader[Row](d.f), buf: make([]Row, min(256, max(2, (512<<10)/per))), d: d, row: -1}
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
	c.row++
	c.i++
	return nil
}

// next returns the smallest row by (key, seq), or nil at the end, with the
// cursor it came from and its row in that cursor's file.
func (m *merger) next() (*Record, *fileCursor, int64, error) {
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
		return nil, nil, 0, nil
	}
	r, row := best.cur, best.row
	if err := best.advance(); err != nil {
		return nil, nil, 0, err
	}
	return r, best, row, nil
}

func (m *merger) close() {
	for _, c := range m.heads {
		c.r.Close()
	}
}
