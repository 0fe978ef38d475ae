package state

import (
	"fmt"
	"os"
	"slices"
	"time"
)

// recover rebuilds the index from the manifest's files and the log.
func (s *Store) recover() error {
	man, err := currentManifest(s.manDir)
	if err != nil {
		return err
	}
	removed, err := collectGarbage(s.manDir, s.dataDir, s.opts.KeepManifests, nil)
	if err != nil {
		return err
	}
	for _, p := range removed {
		s.log.Info().Str("file", p).Msg("state: removed a file no kept manifest lists")
	}
	for _, f := range man.Files {
		if err := verifyDataFile(s.dataDir, f); err != nil {
			return err
		}
		d, err := openDataFile(s.dataDir, f)
		if err != nil {
			return err
		}
		s.files = append(s.files, d)
		err = d.eachIndexRow(func(row int64, ir *indexRow) error {
			op, err := parseOp(ir.Op)
			if err != nil {
				return fmt.Errorf("row %d: %w", row, err)
			}
			p, slot, err := d.locate(row)
			if err != nil {
				return err
			}
			s.applyAt(op, ir.Key, entry{seq: uint64(ir.Seq), time: ir.TS, service: s.intern(ir.Service), page: p, slot: slot})
			return nil
		})
		if err != nil {
			return err
		}
	}
	slices.SortFunc(s.events, func(a, b event) int { return cmpUint(a.seq, b.seq) })
	s.man, s.seq = man, man.Seq
	segs, truncated, err := replayWAL(s.walDir, man.Seq, s.opts.syncFile, func(r Record) {
		s.apply(&r)
		s.mem = append(s.mem, r)
		s.seq = r.Seq
	})
	if err != nil {
		return err
	}
	if truncated > 0 {
		s.log.Warn().Str("dir", s.walDir).Int64("bytes", truncated).Msg("state: cut the torn tail of the log (writes never acknowledged)")
	}
	s.buffered, s.bufBytes = len(s.mem), recordBytes(s.mem)
	s.memBytes = s.bufBytes
	next := uint64(1)
	for _, sg := range segs {
		next = sg.index + 1
		if sg.maxSeq > man.Seq {
			if fi, err := os.Stat(sg.path); err == nil {
				s.stats.logBytes.Add(fi.Size())
			}
			s.memSegs = append(s.memSegs, sg.path)
		} else if err := os.Remove(sg.path); err != nil {
			return fmt.Errorf("remove flushed log segment: %w", err)
		}
	}
	if s.wal, err = openWAL(s.walDir, next, s.opts.syncFile); err != nil {
		return err
	}
	s.refreshFileStats(man)
	s.trimEvents(time.Now())
	s.stats.seq.Store(s.seq)
	s.stats.manifestGen.Store(man.Generation)
	s.log.Debug().Str("dir", s.dir).Uint64("seq", s.seq).Int("replayed", len(s.mem)).Int("files", len(man.Files)).Msg("state: opened")
	return nil
}

func (s *Store) refreshFileStats(m manifest) {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	s.stats.files.Store(int64(len(m.Files)))
	s.stats.fileBytes.Store(n)
}

// apply puts a record still only in the log into the in-memory index. The
// caller holds idxMu or owns the store exclusively.
func (s *Store) apply(r *Record) {
	s.applyAt(r.Op, r.Key, entry{value: r.Value, seq: r.Seq, time: r.Time.UnixNano(), service: s.intern(r.Service)})
}

func (s *Store) applyAt(op Op, key string, e entry) {
	switch op {
	case OpPut:
		if old, ok := s.kv[key]; !ok || old.seq < e.seq {
			s.kv[key] = e
		}
	case OpDelete:
		if old, ok := s.kv[key]; ok && old.seq < e.seq {
			delete(s.kv, key)
		}
	case OpEvent:
		s.events = append(s.events, event{e})
	}
}

// trimEvents drops the events the retention no longer keeps from the
// index; compactions drop them from the files. The caller holds idxMu or
// owns the store exclusively.
func (s *Store) trimEvents(now time.Time) {
	drop := 0
	if c := s.opts.EventRetentionCount; c > 0 && len(s.events) > c {
		drop = len(s.events) - c
	}
	if a := s.opts.EventRetentionAge; a > 0 {
		oldest := now.Add(-a).UnixNano()
		for drop < len(s.events) && s.events[drop].time < oldest {
			drop++
		}
	}
	if drop == 0 {
		return
	}
	s.eventsCut.Store(s.events[drop-1].seq)
	s.stats.eventsDropped.Add(uint64(drop))
	s.events = s.events[drop:]
	if cap(s.events) > 2*len(s.events)+1024 {
		s.events = slices.Clone(s.events) // let the dropped front go
	}
}

// intern returns one copy of each service name. The caller holds idxMu or
// owns the store exclusively.
func (s *Store) intern(name string) string {
	if v, ok := s.services[name]; ok {
		return v
	}
	s.services[name] = name
	return name
}
