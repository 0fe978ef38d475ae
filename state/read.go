package state

import (
	"errors"
	"slices"
	"strings"
	"time"
)

// Get returns the current version of key. The value is a copy. A value
// that cannot be read from its data file is logged and reported absent;
// Read returns the error.
func (s *Store) Get(key string) (Entry, bool) {
	e, ok, err := s.Read(key)
	if err != nil {
		s.log.Error().Err(err).Str("dir", s.dir).Str("key", key).Msg("state: read failed")
		return Entry{}, false
	}
	return e, ok
}

// Read returns the current version of key, reading its value from its data
// file (through the cache) unless it is still in the buffer.
func (s *Store) Read(key string) (Entry, bool, error) {
	for {
		s.idxMu.RLock()
		e, ok := s.kv[key]
		s.idxMu.RUnlock()
		if !ok {
			return Entry{}, false, nil
		}
		v, err := s.valueOf(&e)
		if errors.Is(err, errMoved) {
			continue // compacted meanwhile: the index points at the new file
		}
		if err != nil {
			return Entry{}, false, err
		}
		return Entry{Key: key, Value: v, Seq: e.seq, Service: e.service, Time: time.Unix(0, e.time)}, true, nil
	}
}

// valueOf returns a copy of e's value.
func (s *Store) valueOf(e *entry) ([]byte, error) {
	if e.page == nil {
		return slices.Clone(e.value), nil
	}
	return s.readValue(e.page, e.slot)
}

// List returns the keys starting with prefix, sorted.
func (s *Store) List(prefix string) []string {
	s.idxMu.RLock()
	keys := make([]string, 0, min(len(s.kv), 1024))
	for k := range s.kv {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	s.idxMu.RUnlock()
	slices.Sort(keys)
	return keys
}

// Scan calls fn with every key starting with prefix and its current version,
// in key order, until fn returns false. It works on a snapshot: writes that
// happen during the scan are not seen.
func (s *Store) Scan(prefix string, fn func(Entry) bool) {
	type kv struct {
		k string
		e entry
	}
	s.idxMu.RLock()
	snap := make([]kv, 0, min(len(s.kv), 1024))
	for k, e := range s.kv {
		if strings.HasPrefix(k, prefix) {
			snap = append(snap, kv{k, e})
		}
	}
	s.idxMu.RUnlock()
	slices.SortFunc(snap, func(a, b kv) int { return strings.Compare(a.k, b.k) })
	for _, x := range snap {
		v, err := s.valueOf(&x.e)
		if errors.Is(err, errMoved) {
			e, ok, err2 := s.Read(x.k) // compacted meanwhile; a newer version is fine
			if !ok {
				continue
			}
			v, err, x.e.seq, x.e.service, x.e.time = e.Value, err2, e.Seq, e.Service, e.Time.UnixNano()
		}
		if err != nil {
			s.log.Error().Err(err).Str("dir", s.dir).Str("key", x.k).Msg("state: scan stopped: read failed")
			return
		}
		if !fn(Entry{Key: x.k, Value: v, Seq: x.e.seq, Service: x.e.service, Time: time.Unix(0, x.e.time)}) {
			return
		}
	}
}

// Events returns up to limit events with a seq greater than since, oldest
// first. Their values are copies.
func (s *Store) Events(since uint64, limit int) []Record {
	var out []Record
	_ = s.EachEvent(since, limit, 0, func(r Record) error { out = append(out, r); return nil })
	return out
}

// EachEvent calls fn with up to limit events with a seq greater than since,
// oldest first, reading each body from disk as it goes; it stops once the
// bodies passed weigh maxBytes or more (0: no limit; the first event is
// always passed). It returns fn's error or a read error.
func (s *Store) EachEvent(since uint64, limit, maxBytes int, fn func(Record) error) error {
	if since == ^uint64(0) {
		return nil // nothing can come after the last seq (since+1 would wrap to 0)
	}
	next, bytes := since+1, 0
	var oldest int64
	if s.opts.EventRetentionAge > 0 {
		oldest = time.Now().Add(-s.opts.EventRetentionAge).UnixNano()
	}
outer:
	for n := 0; n < limit; {
		s.idxMu.RLock()
		i, _ := slices.BinarySearchFunc(s.events, next, func(e event, seq uint64) int { return cmpUint(e.seq, seq) })
		batch := s.events[i:min(len(s.events), i+min(64, limit-n))]
		batch = slices.Clone(batch)
		s.idxMu.RUnlock()
		if len(batch) == 0 {
			return nil
		}
		for _, e := range batch {
			if e.time < oldest {
				next = e.seq + 1 // past the retention age (dropped at the next write)
				continue
			}
			v, err := s.valueOf(&e.entry)
			if errors.Is(err, errMoved) {
				continue outer // compacted: look it up again
			}
			if err != nil {
				return err
			}
			if err := fn(Record{Seq: e.seq, Op: OpEvent, Value: v, Service: e.service, Time: time.Unix(0, e.time)}); err != nil {
				return err
			}
			n++
			next = e.seq + 1
			bytes += len(v)
			if (maxBytes > 0 && bytes >= maxBytes) || n >= limit {
				return nil
			}
		}
	}
	return nil
}
