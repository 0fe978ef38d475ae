package state

import (
	"fmt"
	"slices"
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

// compact merges the files chosen by pickCompaction into one, keeping the
// newest version of each key and every event. Tombstones are kept: files
// replaced by a compaction stay on disk until garbage collection drops the
// manifests listing them, and a reader that globs data/*.parquet (the
// documented DuckDB query) must still see that their puts were deleted.
func (s *Store) compact() error {
	start := pickCompaction(s.man.Files, s.opts.CompactRatio)
	if start < 0 {
		return nil
	}
	var recs []Record
	for _, f := range s.man.Files[start:] {
		r, err := readDataFile(s.dataDir, f)
		if err != nil {
			return fmt.Errorf("compact: %w", err)
		}
		recs = append(recs, r...)
	}
	merged := newestVersions(recs)
	next := s.man
	next.Generation++
	next.Files = slices.Clone(s.man.Files[:start])
	if len(merged) > 0 {
		meta, err := writeDataFile(s.dataDir, merged, nil, s.opts.syncFile)
		if err != nil {
			return fmt.Errorf("compact %d files: %w", len(s.man.Files)-start, err)
		}
		s.stats.fsyncs.Add(2)
		next.Files = append(next.Files, meta)
	}
	if err := s.install(next); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	s.stats.compactions.Add(1)
	return nil
}

// newestVersions keeps the highest-seq record of every key (put or
// tombstone) and all events.
func newestVersions(recs []Record) []Record {
	latest := make(map[string]int, len(recs))
	var out []Record
	for i := range recs {
		r := &recs[i]
		if r.Op == OpEvent {
			out = append(out, *r)
			continue
		}
		if j, ok := latest[r.Key]; !ok || recs[j].Seq < r.Seq {
			latest[r.Key] = i
		}
	}
	for _, i := range latest {
		out = append(out, recs[i])
	}
	return out
}
