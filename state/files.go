package state

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/tori-run/tori-run/internal/atomicfile"
)

// Row is the schema of the Parquet files, one row per record (docs/STATE.md).
// Every column is required: parquet-go v0.32.0 panics on an optional,json
// []byte column and silently writes NULLs for an optional,json *string, so the
// schema has neither (TestSchemaAvoidsOptionalJSON).
type Row struct {
	Seq     int64  `parquet:"seq"`
	Op      string `parquet:"op,dict"`
	Key     string `parquet:"key"`
	Value   []byte `parquet:"value"`
	Service string `parquet:"service,dict"`
	TS      int64  `parquet:"ts,timestamp(nanosecond)"`
}

func toRow(r *Record) Row {
	return Row{Seq: int64(r.Seq), Op: r.Op.String(), Key: r.Key, Value: r.Value, Service: r.Service, TS: r.Time.UnixNano()}
}

func fromRow(w *Row) (Record, error) {
	op, err := parseOp(w.Op)
	if err != nil {
		return Record{}, err
	}
	return Record{Seq: uint64(w.Seq), Op: op, Key: w.Key, Value: w.Value, Service: w.Service, Time: time.Unix(0, w.TS)}, nil
}

const parquetSuffix = ".parquet"

// rowGroupRows bounds the rows of a row group.
const rowGroupRows = 4096

// sortRows orders rows by key, then seq: the order the files promise.
// parquet-go's SortingWriterConfig only records an order, it does not sort.
func sortRows(rows []Row) {
	slices.SortFunc(rows, func(a, b Row) int {
		if c := strings.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
}

// writerOptions are the options every data file is written with; codec is
// a zstd codec (a flush uses a faster level than a compaction).
func writerOptions(codec *zstdCodec) []parquet.WriterOption {
	return []parquet.WriterOption{
		parquet.Compression(codec),
		parquet.BloomFilters(parquet.SplitBlockFilter(10, "key")),
		// Keep whole keys in the page index: the default cuts min/max to 16 bytes.
		parquet.ColumnIndexSizeLimit(func(path []string) int {
			if len(path) == 1 && path[0] == "key" {
				return MaxKeyLen
			}
			return parquet.DefaultColumnIndexSizeLimit
		}),
		parquet.SortingWriterConfig(parquet.SortingColumns(parquet.Ascending("key"), parquet.Ascending("seq"))),
		parquet.CreatedBy("tori-run state", "1", ""),
		// No min/max of values in the footer and page index: they would copy
		// whole values (up to 1 MiB each) into metadata every reader loads.
		parquet.SkipPageBounds("value"),
		parquet.SkipPageStatistics("value"),
		// Row groups of a bounded size: Repair salvages a damaged file one
		// row group at a time (every page carries a CRC).
		parquet.MaxRowsPerRowGroup(rowGroupRows),
	}
}

// encodeRows writes rows, sorted, as a Parquet file to w. A nil codec
// means parquet-go's default zstd level.
func encodeRows(w io.Writer, rows []Row, codec *zstdCodec) error {
	if codec == nil {
		codec = defaultCodec
	}
	sortRows(rows)
	pw := parquet.NewGenericWriter[Row](w, writerOptions(codec)...)
	if _, err := pw.Write(rows); err != nil {
		return fmt.Errorf("write %d rows: %w", len(rows), err)
	}
	if err := pw.Close(); err != nil {
		return fmt.Errorf("finish Parquet file: %w", err)
	}
	return nil
}

// fileMeta describes a data file in a manifest.
type fileMeta struct {
	Name   string `json:"name"` // <sha256>.parquet
	Size   int64  `json:"size"`
	Rows   int64  `json:"rows"`
	MinSeq uint64 `json:"min_seq"`
	MaxSeq uint64 `json:"max_seq"`
}

// rowWriter streams sorted rows into a Parquet file, closing a row group
// every rowGroupRows rows or rowGroupBytes bytes of values, so memory stays
// bounded whatever the data.
type rowWriter struct {
	pw         *parquet.GenericWriter[Row]
	rows       int64
	groupRows  int
	groupBytes int
	buf        []Row
}

// rowGroupBytes bounds the values of a row group (parquet-go buffers one
// row group in memory).
const rowGroupBytes = 2 << 20

func newRowWriter(w io.Writer, codec *zstdCodec) *rowWriter {
	if codec == nil {
		codec = defaultCodec
	}
	return &rowWriter{pw: parquet.NewGenericWriter[Row](w, writerOptions(codec)...), buf: make([]Row, 0, 64)}
}

func (w *rowWriter) write(r *Record) error {
	w.buf = append(w.buf, toRow(r))
	w.rows++
	w.groupRows++
	w.groupBytes += len(r.Value) + len(r.Key)
	if len(w.buf) == cap(w.buf) || w.groupBytes >= rowGroupBytes || w.groupRows >= rowGroupRows {
		if err := w.drain(); err != nil {
			return err
		}
	}
	if w.groupBytes >= rowGroupBytes || w.groupRows >= rowGroupRows {
		w.groupRows, w.groupBytes = 0, 0
		if err := w.pw.Flush(); err != nil {
			return fmt.Errorf("finish a row group: %w", err)
		}
	}
	return nil
}

func (w *rowWriter) drain() error {
	if len(w.buf) == 0 {
		return nil
	}
	if _, err := w.pw.Write(w.buf); err != nil {
		return fmt.Errorf("write %d rows: %w", len(w.buf), err)
	}
	clear(w.buf)
	w.buf = w.buf[:0]
	return nil
}

func (w *rowWriter) close() error {
	if err := w.drain(); err != nil {
		return err
	}
	if err := w.pw.Close(); err != nil {
		return fmt.Errorf("finish Parquet file: %w", err)
	}
	return nil
}

// dataWriter streams sorted records into a new data file: a temporary
// file hashed as it is written, renamed to its SHA-256 once durable.
type dataWriter struct {
	dir  string
	f    *os.File
	h    hash.Hash
	bw   *bufio.Writer
	rw   *rowWriter
	meta fileMeta
	// claims, if set, gets the file's final name before it appears, so
	// that garbage collection running meanwhile leaves it alone until a
	// manifest lists it (the caller removes the claim then).
	claims *fileClaims
}

func newDataWriter(dir string, codec *zstdCodec) (*dataWriter, error) {
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create temporary file in %s: %w", dir, err)
	}
	w := &dataWriter{dir: dir, f: f, h: sha256.New(), meta: fileMeta{MinSeq: ^uint64(0)}}
	w.bw = bufio.NewWriterSize(io.MultiWriter(f, w.h), 256<<10)
	w.rw = newRowWriter(w.bw, codec)
	return w, nil
}

// write appends r; records must come sorted by (key, seq).
func (w *dataWriter) write(r *Record) error {
	w.meta.Rows++
	w.meta.MinSeq = min(w.meta.MinSeq, r.Seq)
	w.meta.MaxSeq = max(w.meta.MaxSeq, r.Seq)
	return w.rw.write(r)
}

// finish makes the file durable under its SHA-256 name.
func (w *dataWriter) finish(sync syncFunc) (_ fileMeta, err error) {
	defer func() {
		if err != nil {
			w.abort()
		}
	}()
	if err := w.rw.close(); err != nil {
		return fileMeta{}, fmt.Errorf("write %s: %w", w.f.Name(), err)
	}
	if err := w.bw.Flush(); err != nil {
		return fileMeta{}, fmt.Errorf("write %s: %w", w.f.Name(), err)
	}
	if err := sync(w.f); err != nil {
		return fileMeta{}, err
	}
	st, err := w.f.Stat()
	if err != nil {
		return fileMeta{}, fmt.Errorf("stat %s: %w", w.f.Name(), err)
	}
	if err := w.f.Close(); err != nil {
		return fileMeta{}, fmt.Errorf("close %s: %w", w.f.Name(), err)
	}
	w.meta.Size = st.Size()
	w.meta.Name = hex.EncodeToString(w.h.Sum(nil)) + parquetSuffix
	final := filepath.Join(w.dir, w.meta.Name)
	w.claims.add(w.meta.Name)
	if err := os.Rename(w.f.Name(), final); err != nil {
		w.claims.remove(w.meta.Name)
		return fileMeta{}, fmt.Errorf("rename %s to %s: %w", w.f.Name(), final, err)
	}
	if err := atomicfile.SyncDir(w.dir); err != nil {
		w.claims.remove(w.meta.Name) // unlisted: the next garbage collection removes it
		return fileMeta{}, err
	}
	return w.meta, nil
}

func (w *dataWriter) abort() {
	w.f.Close()
	os.Remove(w.f.Name())
}

// sortRecords orders records by key, then seq: the order of a data file.
func sortRecords(recs []Record) {
	slices.SortFunc(recs, func(a, b Record) int {
		if c := strings.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		return cmp.Compare(a.Seq, b.Seq)
	})
}

// writeDataFile sorts recs (in place: record i is row i of the file) and
// writes them as a new data file in dir, named by the SHA-256 of its
// content, durably.
func writeDataFile(dir string, recs []Record, codec *zstdCodec, sync syncFunc) (fileMeta, error) {
	return writeClaimedDataFile(dir, recs, codec, sync, nil)
}

// writeClaimedDataFile is writeDataFile with the new file's name claimed
// (see dataWriter.claims) on success.
func writeClaimedDataFile(dir string, recs []Record, codec *zstdCodec, sync syncFunc, claims *fileClaims) (fileMeta, error) {
	sortRecords(recs)
	w, err := newDataWriter(dir, codec)
	if err != nil {
		return fileMeta{}, err
	}
	w.claims = claims
	for i := range recs {
		if err := w.write(&recs[i]); err != nil {
			w.abort()
			return fileMeta{}, fmt.Errorf("encode data file for %s: %w", dir, err)
		}
	}
	return w.finish(sync)
}

// readDataFile reads a data file, checking it against its name and meta.
func readDataFile(dir string, meta fileMeta) ([]Record, error) {
	path := filepath.Join(dir, meta.Name)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read data file: %w", err)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:])+parquetSuffix != meta.Name {
		return nil, fmt.Errorf("%w: data file %s does not match its SHA-256", ErrCorrupt, path)
	}
	rows, err := parquet.Read[Row](bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("%w: data file %s: %w", ErrCorrupt, path, err)
	}
	if int64(len(rows)) != meta.Rows {
		return nil, fmt.Errorf("%w: data file %s has %d rows, its manifest says %d", ErrCorrupt, path, len(rows), meta.Rows)
	}
	recs := make([]Record, len(rows))
	for i := range rows {
		if recs[i], err = fromRow(&rows[i]); err != nil {
			return nil, fmt.Errorf("%w: data file %s row %d: %w", ErrCorrupt, path, i, err)
		}
	}
	return recs, nil
}
