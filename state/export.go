package state

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
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
// JSON lines. It streams: values are read from disk one at a time, so
// memory does not grow with the state (the key index snapshot aside).
func (s *Store) Export(w io.Writer, f Format) error {
	switch f {
	case FormatParquet:
		rw := newRowWriter(w, nil)
		// Rows sorted by (key, seq): events (no key) first.
		if err := s.EachEvent(0, int(^uint(0)>>1), 0, func(r Record) error { return rw.write(&r) }); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		var err error
		s.Scan("", func(e Entry) bool {
			err = rw.write(&Record{Seq: e.Seq, Op: OpPut, Key: e.Key, Value: e.Value, Service: e.Service, Time: e.Time})
			return err == nil
		})
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		return rw.close()
	case FormatJSONL:
		bw := bufio.NewWriter(w)
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
		var err error
		s.Scan("", func(e Entry) bool {
			err = enc.Encode(jsonLine(&Record{Seq: e.Seq, Op: OpPut, Key: e.Key, Value: e.Value, Service: e.Service, Time: e.Time}))
			return err == nil
		})
		if err == nil {
			err = s.EachEvent(0, int(^uint(0)>>1), 0, func(r Record) error { return enc.Encode(jsonLine(&r)) })
		}
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			return fmt.Errorf("export: %w", err)
		}
		return nil
	}
	return fmt.Errorf("unknown export format %q (want %q or %q)", f, FormatParquet, FormatJSONL)
}

// FormatFromPath picks the export format from a file name's extension:
// .parquet or .jsonl (also .json, .ndjson); ok is false for anything else.
func FormatFromPath(path string) (Format, bool) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".parquet":
		return FormatParquet, true
	case ".jsonl", ".ndjson", ".json":
		return FormatJSONL, true
	}
	return "", false
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
