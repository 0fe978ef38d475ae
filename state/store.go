package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofrs/flock"
	"github.com/rs/zerolog"
)

// Store is an open state directory. Its methods are safe for concurrent use.
type Store struct {
	dir      string
	opts     Options
	log      zerolog.Logger
	lock     *flock.Flock
	walDir   string
	dataDir  string
	manDir   string
	reqs     chan *request
	quit     chan struct{} // closed by Close once no write is in flight
	done     chan struct{} // closed when the committer has stopped
	jobs     chan flushJob // committer → flusher
	results  chan flushResult
	inflight sync.WaitGroup // writes admitted and not yet answered

	mu       sync.Mutex    // guards buffered, freed, failed, retryAt, flushErr, closed
	buffered int           // records admitted and not yet in a Parquet file
	bufBytes int           // and the bytes of their keys and values
	freed    chan struct{} // closed (and replaced) when buffered drops or state changes
	failed   error         // the log's last failure (wraps ErrFailed), until a write succeeds again
	retryAt  time.Time     // writes are refused with failed until then
	flushErr error         // the last flush's failure, until one succeeds
	closed   bool

	idxMu    sync.RWMutex // guards kv, events and services
	kv       map[string]entry
	events   []event           // by seq
	services map[string]string // interned service names
	cache    *pageCache
	// eventsCut: events up to this seq are past the retention; a
	// compaction leaves them out.
	eventsCut atomic.Uint64

	// Owned by the committer goroutine.
	wal      *wal
	seq      uint64
	mem      []Record // durable in the log, not yet handed to the flusher
	memBytes int      // recordBytes(mem)
	memSegs  []string // closed log segments holding part of mem
	flushing bool
	waiters  []flushWaiter
	// flushRetryAt delays the next flush after a failed one.
	flushRetryAt time.Time
	logFailed    bool // fail was called and no write succeeded since

	// Owned by the flusher goroutine (read at Open, before it starts).
	man        manifest
	files      []*dataFile // open, one per man.Files entry
	flushCodec *zstdCodec  // the fastest level: flushes are on the write path

	stats counters
}

// entry is where the current version of a key is: its value in memory
// while it is only in the log (page == nil), else the page of a data file
// holding it and its slot in that page.
type entry struct {
	seq     uint64
	time    int64
	service string
	value   []byte
	page    *pageRef
	slot    int32
}

// event is an entry of the event log.
type event struct {
	entry
}

// Entry is the current version of a key.
type Entry struct {
	Key     string
	Value   []byte
	Seq     uint64
	Service string
	Time    time.Time
}

type request struct {
	recs  []Record
	bytes int        // recordBytes(recs)
	flush bool       // a Flush call, no records
	seq   uint64     // out: seq of the last record
	done  chan error // buffered
}

type flushWaiter struct {
	seq  uint64
	done chan error
}

type counters struct {
	commits, fsyncs, records, flushes, compactions, manifestGen, seq atomic.Uint64
	quotaRefused, eventsDropped, pageLoads                           atomic.Uint64
	files, fileBytes, logBytes                                       atomic.Int64
	lastFlushNanos                                                   atomic.Int64
}

// Open opens (creating it if needed) the state directory dir and recovers
// it: it loads the current manifest's Parquet files, replays the log after
// them, cuts a torn tail off the last log segment, and removes files that no
// manifest lists. A directory another process holds open fails with ErrLocked.
func Open(dir string, opts Options) (_ *Store, err error) {
	opts = opts.withDefaults()
	s := &Store{
		dir: dir, opts: opts, log: opts.Log,
		walDir: filepath.Join(dir, "wal"), dataDir: filepath.Join(dir, "data"), manDir: filepath.Join(dir, "manifests"),
		kv: map[string]entry{}, services: map[string]string{}, freed: make(chan struct{}),
		cache:      newPageCache(opts.CacheBytes),
		flushCodec: fastCodec,
	}
	for _, d := range []string{dir, s.walDir, s.dataDir, s.manDir} {
		if err := mkdirAllSync(d, 0o700); err != nil {
			return nil, fmt.Errorf("create state folder: %w", err)
		}
	}
	if err := s.takeLock(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = s.lock.Unlock() // the error being returned is the one that matters
		}
	}()
	if err := s.recover(); err != nil {
		return nil, fmt.Errorf("recover state directory %s: %w", dir, err)
	}
	s.reqs = make(chan *request, opts.Buffer)
	s.quit, s.done = make(chan struct{}), make(chan struct{})
	s.jobs, s.results = make(chan flushJob, 1), make(chan flushResult, 1)
	flusherDone := make(chan struct{})
	go s.flusher(flusherDone)
	go s.committer(flusherDone)
	return s, nil
}

func (s *Store) takeLock() error {
	path := filepath.Join(s.dir, "LOCK")
	s.lock = flock.New(path)
	ok, err := s.lock.TryLock()
	if err != nil {
		return fmt.Errorf("lock state directory %s: %w", path, err)
	}
	if !ok {
		return fmt.Errorf("%w: %s is held (is the capsule running? use its state socket instead)", ErrLocked, path)
	}
	return nil
}

// recover rebuilds the index from the manifest's files and the log.
func (s *Store) recover() error {
	man, err := currentManifest(s.manDir)
	if err != nil {
		return err
	}
	removed, err := collectGarbage(s.manDir, s.dataDir, s.opts.KeepManifests)
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

// Put stores value under key, durably, on behalf of service. It returns the
// record's seq once the log holding it is fsynced.
func (s *Store) Put(ctx context.Context, service, key string, value []byte) (uint64, error) {
	return s.Apply(ctx, service, []Mutation{{Op: OpPut, Key: key, Value: value}})
}

// Delete removes key, durably (a tombstone record). Deleting a missing key
// is not an error.
func (s *Store) Delete(ctx context.Context, service, key string) (uint64, error) {
	return s.Apply(ctx, service, []Mutation{{Op: OpDelete, Key: key}})
}

// AppendEvent appends body to the event log, durably, and returns its seq.
func (s *Store) AppendEvent(ctx context.Context, service string, body []byte) (uint64, error) {
	return s.Apply(ctx, service, []Mutation{{Op: OpEvent, Value: body}})
}

// Apply writes a batch atomically: after a crash either all of it is there or
// none. It returns the seq of its last record once it is durable. The batch
// may hold at most Options.Buffer records.
func (s *Store) Apply(ctx context.Context, service string, muts []Mutation) (uint64, error) {
	req, err := s.newRequest(service, muts)
	if err != nil {
		return 0, err
	}
	if err := s.admit(ctx, len(req.recs)); err != nil {
		return 0, err
	}
	if err := s.checkQuota(req); err != nil {
		s.inflight.Done()
		return 0, err
	}
	defer s.inflight.Done()
	if err := s.reserve(ctx, len(req.recs), req.bytes); err != nil {
		return 0, err
	}
	return s.submit(ctx, req)
}

func (s *Store) newRequest(service string, muts []Mutation) (*request, error) {
	if len(muts) == 0 {
		return nil, errors.New("empty batch")
	}
	if len(muts) > s.opts.Buffer {
		return nil, fmt.Errorf("%w: batch of %d records, the buffer holds %d", ErrTooLarge, len(muts), s.opts.Buffer)
	}
	if len(service) > maxServiceLen {
		return nil, fmt.Errorf("%w: service name of %d bytes", ErrTooLarge, len(service))
	}
	req := &request{recs: make([]Record, len(muts)), done: make(chan error, 1)}
	size := frameHeader + 4
	for i, m := range muts {
		if err := s.validate(m); err != nil {
			return nil, err
		}
		req.recs[i] = Record{Op: m.Op, Key: m.Key, Value: slices.Clone(m.Value), Service: service}
		size += recordSize(&req.recs[i])
		req.bytes += len(m.Key) + len(m.Value)
	}
	if size > maxFrame {
		return nil, fmt.Errorf("%w: batch of %d bytes, the limit is %d", ErrTooLarge, size, maxFrame)
	}
	return req, nil
}

func (s *Store) validate(m Mutation) error {
	switch m.Op {
	case OpPut, OpDelete:
		if err := ValidateKey(m.Key, s.opts.MaxKey); err != nil {
			return err
		}
	case OpEvent:
		if m.Key != "" {
			return fmt.Errorf("%w: an event has no key", ErrBadKey)
		}
	default:
		return fmt.Errorf("unknown op %d", m.Op)
	}
	if m.Op == OpDelete && len(m.Value) > 0 {
		return errors.New("a delete carries no value")
	}
	if len(m.Value) > s.opts.MaxValue {
		return fmt.Errorf("%w: value of %d bytes, the limit is %d", ErrTooLarge, len(m.Value), s.opts.MaxValue)
	}
	return nil
}

// admit registers an in-flight write unless the store is closed or failed.
func (s *Store) admit(ctx context.Context, _ int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.refusingLocked():
		return s.failed
	}
	s.inflight.Add(1)
	return nil
}

// checkQuota refuses a write that would take the state directory over
// Options.Quota. Batches of deletes only are always let through: they are
// how a capsule frees space (a compaction reclaims it).
func (s *Store) checkQuota(req *request) error {
	if s.opts.Quota <= 0 {
		return nil
	}
	deletes := true
	for i := range req.recs {
		deletes = deletes && req.recs[i].Op == OpDelete
	}
	if deletes {
		return nil
	}
	files, logBytes := s.stats.fileBytes.Load(), s.stats.logBytes.Load()
	if used := files + logBytes + int64(req.bytes); used > s.opts.Quota {
		s.stats.quotaRefused.Add(1)
		return fmt.Errorf("%w: the write of %d bytes would bring the state to %d bytes (data files %d, log %d), the quota is %d; delete keys to free space",
			ErrQuota, req.bytes, used, files, logBytes, s.opts.Quota)
	}
	return nil
}

// refusingLocked reports whether writes are refused after a failure: until
// retryAt; after it, the next write retries. The caller holds mu.
func (s *Store) refusingLocked() bool {
	return s.failed != nil && time.Now().Before(s.retryAt)
}

// reserve waits until n more records fit in the buffer, for at most
// Options.BufferWait.
func (s *Store) reserve(ctx context.Context, n, bytes int) error {
	var timer *time.Timer
	for {
		s.mu.Lock()
		switch {
		case s.refusingLocked():
			s.mu.Unlock()
			return s.failed
		case s.buffered+n <= s.opts.Buffer && (s.bufBytes+bytes <= s.opts.BufferBytes || s.buffered == 0):
			s.buffered += n
			s.bufBytes += bytes
			s.mu.Unlock()
			return nil
		}
		freed := s.freed
		s.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(s.opts.BufferWait)
			defer timer.Stop()
		}
		select {
		case <-freed:
		case <-timer.C:
			s.mu.Lock()
			flushErr := s.flushErr
			s.mu.Unlock()
			if flushErr != nil {
				return fmt.Errorf("%w: %d records waiting to be flushed after %v; the flush fails: %w", ErrBufferFull, s.opts.Buffer, s.opts.BufferWait, flushErr)
			}
			return fmt.Errorf("%w: %d records waiting to be flushed after %v", ErrBufferFull, s.opts.Buffer, s.opts.BufferWait)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release gives n records of buffer back and wakes waiting writers.
func (s *Store) release(n, bytes int) {
	s.mu.Lock()
	s.buffered -= n
	s.bufBytes -= bytes
	s.broadcastLocked()
	s.mu.Unlock()
}

func (s *Store) broadcastLocked() {
	close(s.freed)
	s.freed = make(chan struct{})
}

// submit hands req to the committer and waits for its answer. Once the
// committer has it, the write happens even if ctx ends: the caller only
// stops waiting.
func (s *Store) submit(ctx context.Context, req *request) (uint64, error) {
	select {
	case s.reqs <- req:
	case <-ctx.Done():
		s.release(len(req.recs), req.bytes)
		return 0, ctx.Err()
	}
	select {
	case err := <-req.done:
		return req.seq, err
	case <-ctx.Done():
		return 0, fmt.Errorf("gave up waiting for the write to be durable (it may still be): %w", ctx.Err())
	}
}

// fail (called by the committer only) records that the log could not take a write: writes are refused
// with it for RetryInterval, then the next one retries (see Err).
func (s *Store) fail(err error) {
	s.logFailed = true
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil {
		s.log.Error().Err(err).Str("dir", s.dir).Dur("retry_in", s.opts.RetryInterval).Msg("state: log write failed; refusing writes, then retrying")
	}
	if isNoSpace(err) {
		s.failed = fmt.Errorf("%w: %w: %w", ErrNoSpace, ErrFailed, err)
	} else {
		s.failed = fmt.Errorf("%w: %w", ErrFailed, err)
	}
	s.retryAt = time.Now().Add(s.opts.RetryInterval)
	s.broadcastLocked()
}

// recovered clears a failure once the log took a write again.
func (s *Store) recovered() {
	if !s.logFailed {
		return
	}
	s.logFailed = false
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		s.log.Info().Str("dir", s.dir).Msg("state: the log takes writes again")
		s.failed = nil
		s.broadcastLocked()
	}
}

func (s *Store) setFlushErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushErr = err
}

// Err returns the failure that makes the store refuse writes (wrapping
// ErrFailed, and ErrNoSpace when the disk is full), or nil.
func (s *Store) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

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

// Flush writes every record acknowledged so far into Parquet files and
// returns when the manifest listing them is current.
func (s *Store) Flush(ctx context.Context) error {
	if err := s.admit(ctx, 0); err != nil {
		return err
	}
	defer s.inflight.Done()
	req := &request{flush: true, done: make(chan error, 1)}
	_, err := s.submit(ctx, req)
	return err
}

// Stats is a snapshot of a store's counters.
type Stats struct {
	Seq         uint64 // last seq acknowledged at the time of the call (approximate)
	Keys        int
	Events      int
	Buffered    int // records admitted, not yet in Parquet
	BufferCap   int
	Files       int
	FileBytes   int64
	Manifest    uint64 // current manifest generation
	Commits     uint64 // group commits (one log write and one fsync each)
	Fsyncs      uint64 // every fsync and fdatasync, log and files
	Records     uint64 // records committed since Open
	Flushes     uint64
	Compactions uint64
	LastFlush   time.Duration
	Failed      error
	// Quota is Options.Quota (0: none); Used the bytes it is checked
	// against: the current data files and the log.
	Quota, Used  int64
	QuotaRefused uint64 // writes refused over quota since Open
	// EventsDropped counts events dropped by the retention since Open.
	EventsDropped uint64
	CacheBytes    int    // decoded value pages held in memory
	PageLoads     uint64 // value pages read and decoded from data files (cache misses) since Open
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	s.idxMu.RLock()
	keys, events := len(s.kv), len(s.events)
	s.idxMu.RUnlock()
	s.mu.Lock()
	buffered, failed := s.buffered, s.failed
	s.mu.Unlock()
	return Stats{
		Keys: keys, Events: events, Buffered: buffered, BufferCap: s.opts.Buffer, Failed: failed,
		Seq:   s.stats.seq.Load(),
		Files: int(s.stats.files.Load()), FileBytes: s.stats.fileBytes.Load(), Manifest: s.stats.manifestGen.Load(),
		Commits: s.stats.commits.Load(), Fsyncs: s.stats.fsyncs.Load(), Records: s.stats.records.Load(),
		Flushes: s.stats.flushes.Load(), Compactions: s.stats.compactions.Load(),
		LastFlush: time.Duration(s.stats.lastFlushNanos.Load()),
		Quota:     s.opts.Quota, Used: s.stats.fileBytes.Load() + s.stats.logBytes.Load(),
		QuotaRefused: s.stats.quotaRefused.Load(), EventsDropped: s.stats.eventsDropped.Load(),
		CacheBytes: s.cache.used(), PageLoads: s.stats.pageLoads.Load(),
	}
}

// RetryAfter estimates when a write refused with ErrBufferFull or ErrFailed
// could succeed.
func (s *Store) RetryAfter() time.Duration {
	s.mu.Lock()
	failed, retryAt, flushErr := s.failed, s.retryAt, s.flushErr
	s.mu.Unlock()
	if failed != nil || flushErr != nil {
		return max(time.Second, time.Until(retryAt), s.opts.RetryInterval)
	}
	return max(time.Second, 2*time.Duration(s.stats.lastFlushNanos.Load()))
}

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

// Close waits for writes in flight, flushes the buffer into Parquet (unless
// the store failed), stops its goroutines and releases the directory.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closed = true
	s.broadcastLocked()
	s.mu.Unlock()
	s.inflight.Wait()
	close(s.quit)
	<-s.done
	err := s.Err()
	if err == nil {
		s.mu.Lock()
		if s.flushErr != nil {
			err = fmt.Errorf("final flush failed (the records stay in the log, replayed at the next open): %w", s.flushErr)
		}
		s.mu.Unlock()
	}
	if err2 := s.wal.close(); err == nil {
		err = err2
	}
	for _, d := range s.files {
		d.close()
	}
	if err2 := s.lock.Unlock(); err2 != nil && err == nil {
		err = fmt.Errorf("unlock %s: %w", s.lock.Path(), err2)
	}
	return err
}
