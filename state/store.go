package state

import (
	"context"
	"fmt"
	"path/filepath"
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

	// manMu guards man and files (read at Open, before the goroutines
	// start): the flusher appends a file, the compactor replaces a run of
	// them, each installing a manifest under it.
	manMu      sync.Mutex
	man        manifest
	files      []*dataFile // open, one per man.Files entry
	claims     fileClaims  // data files written, not yet listed by man
	flushCodec *zstdCodec  // the fastest level: flushes are on the write path
	// compactCh wakes the compactor after a flush (flusher → compactor;
	// closed when the flusher stops).
	compactCh chan struct{}
	// compactsDue counts wake-ups sent and not yet handled (tests wait
	// for 0).
	compactsDue atomic.Int64

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
	s.compactCh = make(chan struct{}, 1)
	flusherDone, compactorDone := make(chan struct{}), make(chan struct{})
	go s.compactor(compactorDone)
	go s.flusher(flusherDone, compactorDone)
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
