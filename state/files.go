package state

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress/zstd"
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
func writerOptions(codec *zstd.Codec) []parquet.WriterOption {
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
		// Row groups of a bounded size: Repair salvages a damaged file one
		// row group at a time (every page carries a CRC).
		parquet.MaxRowsPerRowGroup(rowGroupRows),
	}
}

// encodeRows writes rows, sorted, as a Parquet file to w. A nil codec
// means parquet-go's default zstd level.
func encodeRows(w io.Writer, rows []Row, codec *zstd.Codec) error {
	if codec == nil {
		codec = &parquet.Zstd
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

// writeDataFile writes recs as a new data file in dir, named by the SHA-256
// of its content, durably.
func writeDataFile(dir string, recs []Record, codec *zstd.Codec, sync syncFunc) (fileMeta, error) {
	rows := make([]Row, len(recs))
	meta := fileMeta{Rows: int64(len(recs)), MinSeq: ^uint64(0)}
	for i := range recs {
		rows[i] = toRow(&recs[i])
		meta.MinSeq = min(meta.MinSeq, recs[i].Seq)
		meta.MaxSeq = max(meta.MaxSeq, recs[i].Seq)
	}
	var buf bytes.Buffer
	if err := encodeRows(&buf, rows, codec); err != nil {
		return fileMeta{}, fmt.Errorf("encode data file for %s: %w", dir, err)
	}
	sum := sha256.Sum256(buf.Bytes())
	meta.Name = hex.EncodeToString(sum[:]) + parquetSuffix
	meta.Size = int64(buf.Len())
	err := publish(dir, meta.Name, sync, func(f *os.File) error {
		_, err := f.Write(buf.Bytes())
		return err
	})
	return meta, err
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
