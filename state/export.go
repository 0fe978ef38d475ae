package state

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"time"
	"unicode/utf8"
)

// Format is an export format.
type Format string

// Export formats.
const (
	// FormatParquet is one Parquet file with the schema of the data files
	// (Row): the current version of every key (op "put") and every event.
	FormatParquet Format = "parquet"
	// FormatJSONL is one JSON object a line (JSONLine), same rows.
	FormatJSONL Format = "jsonl"
)

// JSONLine is a row of a JSON-lines export. Value holds the value when it is
// UTF-8, ValueBase64 otherwise.
type JSONLine struct {
	Seq         uint64    `json:"seq"`
	Op          string    `json:"op"`
	Key         string    `json:"key,omitempty"`
	Value       *string   `json:"value,omitempty"`
	ValueBase64 string    `json:"value_base64,omitempty"`
	Service     string    `json:"service"`
	Time        time.Time `json:"ts"`
}

// Snapshot returns the current version of every key, in key order, then
// every event, in seq order: what Export writes.
func (s *Store) Snapshot() []Record {
	var out []Record
	s.Scan("", func(e Entry) bool {
		out = append(out, Record{Seq: e.Seq, Op: OpPut, Key: e.Key, Value: e.Value, Service: e.Service, Time: e.Time})
		return true
	})
	return append(out, s.Events(0, int(^uint(0)>>1))...)
}

// Export writes a compacted copy of the state to w: a single Parquet file or
// JSON lines.
func (s *Store) Export(w io.Writer, f Format) error {
	return WriteRecords(w, f, s.Snapshot())
}

// WriteRecords writes recs to w in format f. Parquet rows are sorted by key
// then seq (events, which have no key, first).
func WriteRecords(w io.Writer, f Format, recs []Record) error {
	switch f {
	case FormatParquet:
		rows := make([]Row, len(recs))
		for i := range recs {
			rows[i] = toRow(&recs[i])
		}
		return encodeRows(w, rows, nil)
	case FormatJSONL:
		return writeJSONL(w, recs)
	}
	return fmt.Errorf("unknown export format %q (want %q or %q)", f, FormatParquet, FormatJSONL)
}

func writeJSONL(w io.Writer, recs []Record) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	for i := range recs {
		if err := enc.Encode(jsonLine(&recs[i])); err != nil {
			return fmt.Errorf("export record %d: %w", recs[i].Seq, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

func jsonLine(r *Record) JSONLine {
	l := JSONLine{Seq: r.Seq, Op: r.Op.String(), Key: r.Key, Service: r.Service, Time: r.Time.UTC()}
	if utf8.Valid(r.Value) {
		v := string(r.Value)
		l.Value = &v
	} else {
		l.ValueBase64 = base64.StdEncoding.EncodeToString(r.Value)
	}
	return l
}
