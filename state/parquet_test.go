package state

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
)

// The traps of parquet-go v0.32.0 named in issue 6, each with a test that
// the store does not fall into it.

// Trap 1 and 2: an optional,json []byte column panics and an optional,json
// *string one writes NULLs. The schema has only required, non-JSON columns,
// and JSON, binary and empty values come back byte for byte.
func TestSchemaAvoidsOptionalJSON(t *testing.T) {
	schema := parquet.SchemaOf(Row{})
	for _, f := range schema.Fields() {
		if f.Optional() || f.Repeated() {
			t.Errorf("column %s is not required", f.Name())
		}
		if lt := f.Type().LogicalType(); lt != nil && lt.String() == "JSON" {
			t.Errorf("column %s has the JSON logical type", f.Name())
		}
	}
	values := [][]byte{[]byte(`{"a":[1,2,{"b":null}]}`), {0, 0xff, 0xfe, 0}, {}, []byte("null"), bytes.Repeat([]byte{'j'}, 70000)}
	var recs []Record
	for i, v := range values {
		recs = append(recs, Record{Seq: uint64(i + 1), Op: OpPut, Key: fmt.Sprint("k", i), Value: v, Service: "svc", Time: time.Unix(0, int64(i))})
	}
	got := roundTrip(t, recs)
	for i := range recs {
		j := indexBySeq(got, recs[i].Seq)
		if j < 0 || !bytes.Equal(got[j].Value, recs[i].Value) || got[j].Key != recs[i].Key {
			t.Errorf("record %d came back as %+v", recs[i].Seq, got[j])
		}
	}
}

// TestTrapCanaries: parquet-go v0.32.0 still has the two JSON traps the
// schema works around (trap 1 and 2 above). When an upgrade fixes one,
// this fails, so whoever upgrades rechecks the workaround, this canary and
// docs/STATE.md instead of carrying a rule nobody needs any more.
func TestTrapCanaries(t *testing.T) {
	type optBytes struct {
		V []byte `parquet:"v,optional,json"`
	}
	type optString struct {
		V *string `parquet:"v,optional,json"`
	}
	panicked := func() (r any) {
		defer func() { r = recover() }()
		var buf bytes.Buffer
		_ = parquet.Write(&buf, []optBytes{{V: []byte(`{"a":1}`)}})
		return nil
	}()
	if panicked == nil {
		t.Errorf("trap 1 is gone: writing an optional,json []byte column no longer panics; recheck the schema rule and update this canary and docs/STATE.md")
	} else {
		t.Logf("trap 1 still present: an optional,json []byte column panics: %v", panicked)
	}

	s := `{"a":1}`
	var buf bytes.Buffer
	if err := parquet.Write(&buf, []optString{{V: &s}}); err != nil {
		t.Fatalf("writing an optional,json *string column: %v", err)
	}
	rows, err := parquet.Read[optString](bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	switch {
	case err != nil:
		t.Fatalf("reading an optional,json *string column back: %v", err)
	case len(rows) != 1:
		t.Fatalf("read %d rows back, want 1", len(rows))
	case rows[0].V != nil:
		t.Errorf("trap 2 is gone: an optional,json *string column kept its value (%q) instead of writing NULL; recheck the schema rule and update this canary and docs/STATE.md", *rows[0].V)
	default:
		t.Logf("trap 2 still present: an optional,json *string column wrote NULL")
	}
}

// Trap 3: SortingWriterConfig records an order without sorting. The store
// sorts; the file must really be sorted by (key, seq) and say so.
func TestFilesAreReallySorted(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var recs []Record
	for i := range 3000 {
		recs = append(recs, Record{Seq: uint64(i + 1), Op: OpPut, Key: fmt.Sprintf("key-%04d", rng.IntN(500)), Value: []byte("v"), Time: time.Now()})
	}
	dir := t.TempDir()
	meta, err := writeDataFile(dir, recs, nil, fdatasync)
	if err != nil {
		t.Fatal(err)
	}
	f := openParquet(t, filepath.Join(dir, meta.Name))
	rows, err := parquet.ReadFile[Row](filepath.Join(dir, meta.Name))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(rows); i++ {
		a, b := rows[i-1], rows[i]
		if a.Key > b.Key || (a.Key == b.Key && a.Seq >= b.Seq) {
			t.Fatalf("row %d (%s,%d) after (%s,%d): not sorted", i, b.Key, b.Seq, a.Key, a.Seq)
		}
	}
	for _, rg := range f.RowGroups() {
		sc := rg.SortingColumns()
		if len(sc) != 2 || sc[0].Path()[0] != "key" || sc[1].Path()[0] != "seq" || sc[0].Descending() {
			t.Errorf("row group sorting columns %v, want key, seq ascending", sc)
		}
	}
}

// Trap 4: page-index min/max are cut to 16 bytes by default. The key column
// keeps whole keys, so a reader pruning pages by key sees the true bounds.
func TestPageIndexKeepsWholeKeys(t *testing.T) {
	long := strings.Repeat("p", 100)
	recs := []Record{
		{Seq: 1, Op: OpPut, Key: long + "a", Value: []byte("1"), Time: time.Now()},
		{Seq: 2, Op: OpPut, Key: long + "z", Value: []byte("2"), Time: time.Now()},
	}
	dir := t.TempDir()
	meta, err := writeDataFile(dir, recs, nil, fdatasync)
	if err != nil {
		t.Fatal(err)
	}
	f := openParquet(t, filepath.Join(dir, meta.Name))
	col, ok := f.Schema().Lookup("key")
	if !ok {
		t.Fatal("no key column")
	}
	idx, err := f.RowGroups()[0].ColumnChunks()[col.ColumnIndex].ColumnIndex()
	if err != nil {
		t.Fatalf("key column index: %v", err)
	}
	if lo, hi := string(idx.MinValue(0).ByteArray()), string(idx.MaxValue(0).ByteArray()); lo != long+"a" || hi != long+"z" {
		t.Errorf("page index bounds %q..%q, want the whole keys", lo, hi)
	}
	if bf := f.RowGroups()[0].ColumnChunks()[col.ColumnIndex].BloomFilter(); bf == nil {
		t.Error("no bloom filter on key")
	} else if ok, err := bf.Check(parquet.ValueOf(long + "a")); err != nil || !ok {
		t.Errorf("bloom filter misses a key: %v %v", ok, err)
	}
	if cc := f.Metadata().RowGroups[0].Columns[col.ColumnIndex].MetaData.Codec; cc.String() != "ZSTD" {
		t.Errorf("key column codec %v, want ZSTD", cc)
	}
}

func openParquet(t *testing.T, path string) *parquet.File {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	st, _ := fh.Stat()
	f, err := parquet.OpenFile(fh, st.Size())
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return f
}

func roundTrip(t *testing.T, recs []Record) []Record {
	t.Helper()
	dir := t.TempDir()
	meta, err := writeDataFile(dir, recs, nil, fdatasync)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readDataFile(dir, meta)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func indexBySeq(recs []Record, seq uint64) int {
	for i := range recs {
		if recs[i].Seq == seq {
			return i
		}
	}
	return -1
}
