package state

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/parquet-go/parquet-go"
)

// Values live on disk: in the data files, found through the in-memory index
// (key → seq and the page and slot in it holding the value), or, for the
// records not yet flushed, in the buffer. Reads of values in files go through
// a cache of decoded value pages bounded in bytes (Options.CacheBytes): the
// index entry points at the page's pageRef, so a hit is one atomic load and a
// copy (no lookup by key, no lock, no page index walk).

// valueColumn is the index of the value column in Row.
const valueColumn = 3

// dataFile is an open data file.
type dataFile struct {
	meta   fileMeta
	path   string
	f      *os.File
	pf     *parquet.File
	starts []int64      // first row of each row group
	pages  [][]*pageRef // per row group, each page of the value column

	mu     sync.RWMutex // readers hold it shared; close takes it
	closed bool
}

// errMoved: the file was replaced by a compaction while a reader looked it
// up; the index already points at the new one.
var errMoved = errors.New("data file replaced")

func openDataFile(dir string, meta fileMeta) (*dataFile, error) {
	path := filepath.Join(dir, meta.Name)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: data file %s listed by the manifest: %w", ErrCorrupt, path, err)
	}
	pf, err := parquet.OpenFile(f, meta.Size, parquet.SkipBloomFilters(true), parquet.ReadBufferSize(16<<10))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: data file %s: %w", ErrCorrupt, path, err)
	}
	d := &dataFile{meta: meta, path: path, f: f, pf: pf}
	var n int64
	for i, rg := range pf.RowGroups() {
		d.starts = append(d.starts, n)
		n += rg.NumRows()
		oi, err := rg.ColumnChunks()[valueColumn].OffsetIndex()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: data file %s row group %d: offset index: %w", ErrCorrupt, path, i, err)
		}
		refs := make([]*pageRef, oi.NumPages())
		for p := range refs {
			first, end := oi.FirstRowIndex(p), rg.NumRows()
			if p+1 < len(refs) {
				end = oi.FirstRowIndex(p + 1)
			}
			if p == 0 && first != 0 || end < first || end > rg.NumRows() {
				f.Close()
				return nil, fmt.Errorf("%w: data file %s row group %d: offset index: page %d holds rows %d..%d of %d", ErrCorrupt, path, i, p, first, end, rg.NumRows())
			}
			refs[p] = &pageRef{file: d, rg: int32(i), page: int32(p), first: first, rows: int32(end - first), slot: -1}
		}
		d.pages = append(d.pages, refs)
	}
	if n != meta.Rows {
		f.Close()
		return nil, fmt.Errorf("%w: data file %s has %d rows, its manifest says %d", ErrCorrupt, path, n, meta.Rows)
	}
	return d, nil
}

func (d *dataFile) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.closed = true
		d.f.Close()
	}
}

// indexRow is a row without its value: what Open reads to build the index.
type indexRow struct {
	Seq     int64  `parquet:"seq"`
	Op      string `parquet:"op"`
	Key     string `parquet:"key"`
	Service string `parquet:"service"`
	TS      int64  `parquet:"ts,timestamp(nanosecond)"`
}

// eachIndexRow calls fn with every row of d, without values, in order.
func (d *dataFile) eachIndexRow(fn func(row int64, r *indexRow) error) error {
	var row int64
	for _, rg := range d.pf.RowGroups() {
		cols := rg.ColumnChunks()
		seqs, err := readInt64Column(cols[0])
		if err != nil {
			return fmt.Errorf("%w: data file %s: seq column: %w", ErrCorrupt, d.path, err)
		}
		ops, err := readStringColumn(cols[1])
		if err == nil {
			var keys, services []string
			keys, err = readStringColumn(cols[2])
			if err == nil {
				services, err = readStringColumn(cols[4])
				if err == nil {
					var ts []int64
					ts, err = readInt64Column(cols[5])
					if err == nil && (len(ops) != len(seqs) || len(keys) != len(seqs) || len(services) != len(seqs) || len(ts) != len(seqs)) {
						err = errors.New("columns of different lengths")
					}
					for i := range seqs {
						if err != nil {
							break
						}
						err = fn(row, &indexRow{Seq: seqs[i], Op: ops[i], Key: keys[i], Service: services[i], TS: ts[i]})
						row++
					}
				}
			}
		}
		if err != nil {
			return fmt.Errorf("%w: data file %s: %w", ErrCorrupt, d.path, err)
		}
	}
	return nil
}

func readInt64Column(cc parquet.ColumnChunk) ([]int64, error) {
	var out []int64
	err := eachValue(cc, func(v parquet.Value) { out = append(out, v.Int64()) })
	return out, err
}

func readStringColumn(cc parquet.ColumnChunk) ([]string, error) {
	var out []string
	err := eachValue(cc, func(v parquet.Value) { out = append(out, string(v.ByteArray())) })
	return out, err
}

// eachValue calls fn with every value of a column chunk (dictionaries
// resolved).
func eachValue(cc parquet.ColumnChunk, fn func(parquet.Value)) error {
	pages := cc.Pages()
	defer pages.Close()
	buf := make([]parquet.Value, 256)
	for {
		p, err := pages.ReadPage()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		vr := p.Values()
		for {
			n, err := vr.ReadValues(buf)
			for _, v := range buf[:n] {
				fn(v)
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				parquet.Release(p)
				return err
			}
		}
		parquet.Release(p)
	}
}

// locate returns the page of d holding row and the row's slot in it.
func (d *dataFile) locate(row int64) (*pageRef, int32, error) {
	rg := sort.Search(len(d.starts), func(i int) bool { return d.starts[i] > row }) - 1
	if rg < 0 {
		return nil, 0, fmt.Errorf("%w: data file %s has no row %d", ErrCorrupt, d.path, row)
	}
	r := row - d.starts[rg]
	refs := d.pages[rg]
	page := sort.Search(len(refs), func(i int) bool { return refs[i].first > r }) - 1
	if page < 0 || r-refs[page].first >= int64(refs[page].rows) {
		return nil, 0, fmt.Errorf("%w: data file %s: no page holds row %d", ErrCorrupt, d.path, row)
	}
	return refs[page], int32(r - refs[page].first), nil
}

// pageRef is a page of a data file's value column: where index entries
// point, and where the cache keeps the page once decoded.
type pageRef struct {
	file     *dataFile
	rg, page int32
	rows     int32                      // rows in the page
	first    int64                      // its first row in the row group
	cp       atomic.Pointer[cachedPage] // nil unless cached
	ref      atomic.Bool                // read since the clock hand last passed
	slot     int                        // index in pageCache.ring, -1: not cached (guarded by pageCache.mu)
}

// cachedPage is a decoded page of values: value i is data[offs[i]:offs[i+1]].
type cachedPage struct {
	data []byte
	offs []uint32
}

func (p *cachedPage) size() int { return len(p.data) + 4*len(p.offs) + 128 }

func (p *cachedPage) value(i int32) ([]byte, bool) {
	if i < 0 || int(i)+1 >= len(p.offs) {
		return nil, false
	}
	return p.data[p.offs[i]:p.offs[i+1]], true
}

// readValue returns a copy of value i of page p, through the cache.
func (s *Store) readValue(p *pageRef, i int32) ([]byte, error) {
	cp := p.cp.Load()
	if cp == nil {
		var err error
		if cp, err = s.loadPage(p); err != nil {
			return nil, err
		}
	} else if !p.ref.Load() {
		p.ref.Store(true)
	}
	v, ok := cp.value(i)
	if !ok {
		return nil, fmt.Errorf("%w: data file %s row group %d page %d has no value %d", ErrCorrupt, p.file.path, p.rg, p.page, i)
	}
	return append([]byte(nil), v...), nil
}

// loadPage decodes page p from its file and caches it. A file closed
// meanwhile (replaced by a compaction) gives errMoved.
func (s *Store) loadPage(p *pageRef) (*cachedPage, error) {
	d := p.file
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, errMoved
	}
	cc := d.pf.RowGroups()[p.rg].ColumnChunks()[valueColumn]
	cp, err := decodePage(cc, p.first)
	if err == nil && len(cp.offs) != int(p.rows)+1 {
		err = fmt.Errorf("the page holds %d values, its offset index says %d", len(cp.offs)-1, p.rows)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: data file %s row group %d page %d: %w", ErrCorrupt, d.path, p.rg, p.page, err)
	}
	s.stats.pageLoads.Add(1)
	s.cache.insert(p, cp) // under d.mu: a closed file's pages are never cached again
	return cp, nil
}

func decodePage(cc parquet.ColumnChunk, first int64) (*cachedPage, error) {
	pages := cc.Pages()
	defer pages.Close()
	if err := pages.SeekToRow(first); err != nil {
		return nil, err
	}
	p, err := pages.ReadPage()
	if err != nil {
		return nil, err
	}
	defer parquet.Release(p)
	vals := p.Data()
	data, offs := vals.ByteArray()
	return &cachedPage{data: append([]byte(nil), data...), offs: append([]uint32(nil), offs...)}, nil
}

// warm caches the pages of d whose every value value(row) gives, as a
// flush or a compaction writes d: the values were in memory already, and a
// read right after a write (the common case for state) then decodes
// nothing; RocksDB's prepopulate_block_cache does the same for flushes.
// Only pages of small values (at most warmValueMax each) are cached this
// way: a large value is cheap to decode for its size, and caching every
// large value written would fill the cache with data nobody may read (and
// take the memory of a write-only load to CacheBytes more).
// pageDone, if set, is called with the rows [start, end) of each page once it
// is cached (or could not be).
func (s *Store) warm(d *dataFile, value func(row int64) ([]byte, bool), pageDone func(start, end int64)) {
	var data []byte
	var offs []uint32
	for rg, refs := range d.pages {
		for _, p := range refs {
			data, offs = data[:0], append(offs[:0], 0)
			ok := true
			start := d.starts[rg] + p.first
			end := start + int64(p.rows)
			for r := start; ok && r < end; r++ {
				var v []byte
				if v, ok = value(r); ok && len(v) <= warmValueMax && len(data)+len(v) <= s.cache.max {
					data = append(data, v...)
					offs = append(offs, uint32(len(data)))
				} else {
					ok = false
				}
			}
			if ok {
				s.cache.insert(p, &cachedPage{data: append([]byte(nil), data...), offs: append([]uint32(nil), offs...)})
			}
			if pageDone != nil {
				pageDone(start, end)
			}
		}
	}
}

// warmValueMax is the largest value a flush or a compaction caches.
const warmValueMax = 4 << 10

// pageCache holds decoded value pages, bounded in bytes, evicting with
// CLOCK (second chance: the approximation of LRU of PostgreSQL's buffer
// manager and of the kernel's page cache). A hit only loads the page's
// pointer and sets its reference bit, with no lock and no lookup: a general
// cache library (otter, ristretto, golang-lru) would put a hashed lookup and
// its own bookkeeping on every read, and the index already knows the page.
// Inserts and evictions take mu.
type pageCache struct {
	mu    sync.Mutex
	max   int
	bytes int
	ring  []*pageRef
	hand  int
}

func newPageCache(max int) *pageCache { return &pageCache{max: max} }

func (c *pageCache) insert(p *pageRef, cp *cachedPage) {
	size := cp.size()
	if size > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.slot >= 0 || p.cp.Load() != nil {
		return // another reader cached it first, or it is detached (still readable)
	}
	for c.bytes+size > c.max && len(c.ring) > 0 {
		c.evictOne()
	}
	p.ref.Store(true)
	p.cp.Store(cp)
	p.slot = len(c.ring)
	c.ring = append(c.ring, p)
	c.bytes += size
}

// evictOne advances the hand to a page not read since it last passed (at
// most one turn: the hand clears the bits it passes) and evicts it. The
// caller holds mu; the ring is not empty.
func (c *pageCache) evictOne() {
	for {
		if c.hand >= len(c.ring) {
			c.hand = 0
		}
		p := c.ring[c.hand]
		if p.ref.Load() {
			p.ref.Store(false)
			c.hand++
			continue
		}
		c.remove(p)
		return
	}
}

// remove evicts p (the last page of the ring takes its slot). The caller
// holds mu.
func (c *pageCache) remove(p *pageRef) *cachedPage {
	cp := p.cp.Load()
	c.bytes -= cp.size()
	p.cp.Store(nil)
	last := c.ring[len(c.ring)-1]
	c.ring[p.slot], last.slot = last, p.slot
	c.ring[len(c.ring)-1] = nil
	c.ring = c.ring[:len(c.ring)-1]
	p.slot = -1
	return cp
}

// drop evicts the pages of d, detached ones included (d is closed).
func (c *pageCache) drop(d *dataFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, refs := range d.pages {
		for _, p := range refs {
			if p.slot >= 0 {
				c.remove(p)
			} else {
				p.cp.Store(nil)
			}
		}
	}
}

// detach takes the pages of d out of the cache's accounting and returns
// them; they stay readable until release (a compaction copies them into
// the pages of the file replacing d, then lets each go).
func (c *pageCache) detach(d *dataFile) map[*pageRef]*cachedPage {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[*pageRef]*cachedPage{}
	for _, refs := range d.pages {
		for _, p := range refs {
			if p.slot >= 0 {
				cp := c.remove(p)
				p.cp.Store(cp)
				out[p] = cp
			}
		}
	}
	return out
}

// release lets a detached page go.
func (c *pageCache) release(p *pageRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.slot < 0 {
		p.cp.Store(nil)
	}
}

func (c *pageCache) used() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
