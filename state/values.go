package state

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/parquet-go/parquet-go"
)

// Values live on disk: in the data files, found through the in-memory index
// (key → seq and the file and row holding the value), or, for the records
// not yet flushed, in the buffer. Reads of values in files go through a
// cache of decoded value pages bounded in bytes (Options.CacheBytes).

// valueColumn is the index of the value column in Row.
const valueColumn = 3

// dataFile is an open data file.
type dataFile struct {
	meta   fileMeta
	path   string
	f      *os.File
	pf     *parquet.File
	starts []int64   // first row of each row group
	pages  [][]int64 // per row group, the first row of each page of the value column

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
		firsts := make([]int64, oi.NumPages())
		for p := range firsts {
			firsts[p] = oi.FirstRowIndex(p)
		}
		d.pages = append(d.pages, firsts)
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

// readValue returns a copy of the value at row of d, through the cache.
func (s *Store) readValue(d *dataFile, row int64) ([]byte, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, errMoved
	}
	rg := sort.Search(len(d.starts), func(i int) bool { return d.starts[i] > row }) - 1
	if rg < 0 {
		return nil, fmt.Errorf("%w: data file %s has no row %d", ErrCorrupt, d.path, row)
	}
	r := row - d.starts[rg]
	firsts := d.pages[rg]
	page := sort.Search(len(firsts), func(i int) bool { return firsts[i] > r }) - 1
	if page < 0 {
		return nil, fmt.Errorf("%w: data file %s: no page holds row %d", ErrCorrupt, d.path, row)
	}
	key := pageKey{d, rg, page}
	cp := s.cache.get(key)
	if cp == nil {
		var err error
		cc := d.pf.RowGroups()[rg].ColumnChunks()[valueColumn]
		if cp, err = loadPage(cc, firsts[page]); err != nil {
			return nil, fmt.Errorf("%w: data file %s row group %d page %d: %w", ErrCorrupt, d.path, rg, page, err)
		}
		s.cache.put(key, cp)
	}
	i := int(r - cp.first)
	if i < 0 || i+1 >= len(cp.offs) {
		return nil, fmt.Errorf("%w: data file %s: row %d is not in its page", ErrCorrupt, d.path, row)
	}
	return append([]byte(nil), cp.data[cp.offs[i]:cp.offs[i+1]]...), nil
}

func loadPage(cc parquet.ColumnChunk, first int64) (*cachedPage, error) {
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
	return &cachedPage{first: first, data: append([]byte(nil), data...), offs: append([]uint32(nil), offs...)}, nil
}

type pageKey struct {
	f        *dataFile
	rg, page int
}

type cachedPage struct {
	key   pageKey
	first int64
	data  []byte
	offs  []uint32
}

func (p *cachedPage) size() int { return len(p.data) + 4*len(p.offs) + 96 }

// pageCache is an LRU of decoded value pages, bounded in bytes.
type pageCache struct {
	mu    sync.Mutex
	max   int
	bytes int
	m     map[pageKey]*list.Element
	l     list.List
}

func newPageCache(max int) *pageCache { return &pageCache{max: max, m: map[pageKey]*list.Element{}} }

func (c *pageCache) get(k pageKey) *cachedPage {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.l.MoveToFront(e)
		return e.Value.(*cachedPage)
	}
	return nil
}

func (c *pageCache) put(k pageKey, p *cachedPage) {
	p.key = k
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; ok || p.size() > c.max {
		return
	}
	c.m[k] = c.l.PushFront(p)
	c.bytes += p.size()
	for c.bytes > c.max {
		e := c.l.Back()
		old := e.Value.(*cachedPage)
		c.l.Remove(e)
		delete(c.m, old.key)
		c.bytes -= old.size()
	}
}

// drop forgets the pages of a file that is being closed.
func (c *pageCache) drop(d *dataFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if k.f == d {
			c.bytes -= e.Value.(*cachedPage).size()
			c.l.Remove(e)
			delete(c.m, k)
		}
	}
}

func (c *pageCache) used() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
