package state

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// maxGroupBytes bounds how much one group commit writes.
const maxGroupBytes = 8 << 20

type flushJob struct {
	recs   []Record
	segs   []string // log segments that only hold records of recs
	maxSeq uint64
}

type flushResult struct {
	job flushJob
	err error
}

// committer is the only goroutine that writes the log. It takes every
// request waiting at the moment, writes them with one write and one fsync
// (group commit), then answers them all.
func (s *Store) committer(flusherDone chan struct{}) {
	defer close(s.done)
	// The flush timer runs only while records wait in the buffer: an idle
	// store makes no wakeups at all (no polling).
	var (
		timer *time.Timer
		tick  <-chan time.Time
	)
	arm := func() {
		if tick != nil || len(s.mem) == 0 || s.flushing {
			return
		}
		d := s.opts.FlushInterval
		if wait := time.Until(s.flushRetryAt); wait > 0 {
			d = wait // a failed flush is retried, whatever FlushInterval says
		} else if d <= 0 {
			return
		}
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		tick = timer.C
	}
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	buf := make([]byte, 0, 64<<10)
	group := make([]*request, 0, 64)
	for {
		select {
		case req := <-s.reqs:
			group = s.drain(append(group[:0], req))
			buf = s.commit(group, buf[:0])
			clear(group)
			arm()
		case res := <-s.results:
			s.flushed(res)
			arm()
		case <-tick:
			tick = nil
			if len(s.mem) > 0 {
				s.startFlush()
			}
			arm()
		case <-s.quit:
			s.shutdown(flusherDone)
			return
		}
	}
}

// drain adds the requests already waiting to group.
func (s *Store) drain(group []*request) []*request {
	size := 0
	for size < maxGroupBytes {
		select {
		case req := <-s.reqs:
			group = append(group, req)
			for i := range req.recs {
				size += recordSize(&req.recs[i])
			}
		default:
			return group
		}
	}
	return group
}

func (s *Store) commit(group []*request, buf []byte) []byte {
	if s.wal.broken {
		// The last write failed. Until RetryInterval has passed, refuse;
		// then cut the failed write off, start a new segment and go on.
		s.mu.Lock()
		refusing, err := s.refusingLocked(), s.failed
		s.mu.Unlock()
		if refusing {
			s.answer(group, err)
			return buf
		}
		old, err := s.wal.restart()
		if err != nil {
			s.fail(err)
			s.answer(group, s.Err())
			return buf
		}
		s.memSegs = append(s.memSegs, old)
	}
	now := time.Now()
	seq := s.seq
	n := 0
	for _, req := range group {
		for i := range req.recs {
			seq++
			req.recs[i].Seq, req.recs[i].Time = seq, now
		}
		req.seq = seq
		if len(req.recs) > 0 {
			buf = appendFrame(buf, req.recs)
			n += len(req.recs)
		}
	}
	if n > 0 {
		start := time.Now()
		err := s.wal.write(buf)
		if err != nil {
			s.fail(err)
			s.answer(group, s.Err())
			return buf
		}
		s.noteCommit(n, time.Since(start))
		s.stats.logBytes.Add(int64(len(buf)))
		s.recovered()
		s.publish(group)
		s.seq = seq
	}
	for _, req := range group {
		if req.flush {
			s.addFlushWaiter(req.done)
		} else {
			req.done <- nil
		}
	}
	if s.flushDue() {
		s.startFlush()
	}
	return buf
}

func (s *Store) noteCommit(n int, d time.Duration) {
	s.stats.commits.Add(1)
	s.stats.fsyncs.Add(1)
	s.stats.records.Add(uint64(n))
	if s.opts.OnCommit != nil {
		s.opts.OnCommit(n, d)
	}
}

// publish makes committed records visible to readers and queues them for
// the next flush.
func (s *Store) publish(group []*request) {
	s.idxMu.Lock()
	events := false
	for _, req := range group {
		for i := range req.recs {
			s.apply(&req.recs[i])
			events = events || req.recs[i].Op == OpEvent
		}
	}
	if events {
		s.trimEvents(time.Now())
	}
	s.idxMu.Unlock()
	for _, req := range group {
		s.mem = append(s.mem, req.recs...)
		s.memBytes += req.bytes
		s.stats.seq.Store(req.seq)
	}
}

func (s *Store) answer(group []*request, err error) {
	for _, req := range group {
		if !req.flush {
			s.release(len(req.recs), req.bytes)
		}
		req.done <- err
	}
}

func (s *Store) addFlushWaiter(done chan error) {
	if len(s.mem) == 0 && !s.flushing {
		done <- nil
		return
	}
	s.waiters = append(s.waiters, flushWaiter{seq: s.seq, done: done})
	if !s.flushing {
		s.startFlush()
	}
}

// startFlush closes the log segment and hands the buffered records to the
// flusher; from now on the log segments it gets hold only those records. It
// does nothing while a flush runs, while the log waits to be repaired after a
// failed write (a segment is never rotated past a failed write) or while a
// failed flush waits for its retry.
func (s *Store) startFlush() {
	if s.flushing || len(s.mem) == 0 || s.wal.broken || time.Now().Before(s.flushRetryAt) {
		return
	}
	closed, err := s.wal.rotate()
	if err != nil {
		// Nothing is lost: the records stay in the open segment.
		s.flushFailed(fmt.Errorf("start a new log segment for a flush: %w", err))
		return
	}
	job := flushJob{recs: s.mem, segs: append(s.memSegs, closed), maxSeq: s.seq}
	s.mem, s.memSegs, s.memBytes, s.flushing = nil, nil, 0, true
	s.jobs <- job // never blocks: the flusher has taken the previous job
}

func (s *Store) flushed(res flushResult) {
	s.flushing = false
	if res.err != nil {
		// The records are still in the log segments: take them back and
		// try again later (a new data file each time, never a second fsync
		// of a file whose fsync failed).
		s.mem = append(res.job.recs, s.mem...)
		s.memBytes += recordBytes(res.job.recs)
		s.memSegs = append(res.job.segs, s.memSegs...)
		s.flushFailed(res.err)
		return
	}
	s.flushRetryAt = time.Time{}
	s.setFlushErr(nil)
	s.release(len(res.job.recs), recordBytes(res.job.recs))
	kept := s.waiters[:0]
	for _, w := range s.waiters {
		if w.seq <= res.job.maxSeq {
			w.done <- nil
		} else {
			kept = append(kept, w)
		}
	}
	s.waiters = kept
	if len(s.mem) > 0 && (len(s.waiters) > 0 || s.flushDue()) {
		s.startFlush()
	}
}

func (s *Store) flushFailed(err error) {
	s.log.Error().Err(err).Str("dir", s.dir).Int("records", len(s.mem)).Dur("retry_in", s.opts.RetryInterval).
		Msg("state: flush failed; the records stay in the log, retrying")
	s.flushRetryAt = time.Now().Add(s.opts.RetryInterval)
	if isNoSpace(err) && !errors.Is(err, ErrNoSpace) {
		err = fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	s.setFlushErr(err)
	s.answerWaiters(fmt.Errorf("flush: %w", err))
}

func (s *Store) answerWaiters(err error) {
	for _, w := range s.waiters {
		w.done <- err
	}
	s.waiters = nil
}

// shutdown commits what is still queued, waits for the flush in progress,
// flushes the rest and stops the flusher.
func (s *Store) shutdown(flusherDone chan struct{}) {
	buf := make([]byte, 0, 64<<10)
	for {
		group := s.drain(nil)
		if len(group) == 0 {
			break
		}
		buf = s.commit(group, buf[:0])
	}
	for s.flushing {
		s.flushed(<-s.results)
	}
	// One last try, whatever the retry delay, unless the log failed; if it
	// fails the records stay in the log for the next open.
	if s.Err() == nil {
		s.flushRetryAt = time.Time{}
		s.startFlush()
	}
	for s.flushing {
		s.flushed(<-s.results)
	}
	s.answerWaiters(ErrClosed)
	close(s.jobs)
	<-flusherDone
}

// flusher turns flush jobs into Parquet files and manifests, and wakes the
// compactor after each. It never compacts itself: a flush (and so a writer
// waiting for room in the buffer) never waits behind a compaction. done is
// closed once the compactor has stopped too.
func (s *Store) flusher(done, compactorDone chan struct{}) {
	defer close(done)
	for job := range s.jobs {
		start := time.Now()
		err := s.flush(job)
		s.stats.lastFlushNanos.Store(int64(time.Since(start)))
		if err == nil {
			s.compactsDue.Add(1)
			select {
			case s.compactCh <- struct{}{}:
			default: // already woken: it picks this file up too
				s.compactsDue.Add(-1)
			}
		}
		s.results <- flushResult{job: job, err: err}
	}
	close(s.compactCh)
	<-compactorDone
}

// flush writes job's records into a data file, makes a manifest listing it
// current, then trims the log segments that held them.
func (s *Store) flush(job flushJob) error {
	meta, err := writeClaimedDataFile(s.dataDir, job.recs, s.flushCodec, s.opts.syncFile, &s.claims)
	if err != nil {
		return fmt.Errorf("flush %d records: %w", len(job.recs), err)
	}
	defer s.claims.remove(meta.Name) // listed, or garbage once it fails
	s.stats.fsyncs.Add(2)
	d, err := openDataFile(s.dataDir, meta)
	if err != nil {
		return fmt.Errorf("flush: reopen the new data file: %w", err)
	}
	s.manMu.Lock()
	next := s.man
	next.Generation++
	next.Seq = job.maxSeq
	next.Files = append(append([]fileMeta(nil), s.man.Files...), meta)
	if err := s.install(next); err != nil {
		s.manMu.Unlock()
		d.close()
		return err
	}
	s.files = append(s.files, d)
	s.manMu.Unlock()
	// The values are in the file now (writeDataFile sorted job.recs: record
	// i is row i): cache its pages from the buffer's copies, point the index
	// there and let the copies go.
	s.warm(d, func(row int64) ([]byte, bool) { return job.recs[row].Value, true }, nil)
	s.idxMu.Lock()
	var relErr error
	for i := range job.recs {
		if err := s.relocate(&job.recs[i], d, int64(i)); err != nil && relErr == nil {
			relErr = err
		}
	}
	s.idxMu.Unlock()
	if relErr != nil {
		// openDataFile checked the pages cover every row: a bug, not damage.
		s.log.Error().Err(relErr).Str("file", d.path).Msg("state: flush: a record stays in memory")
	}
	s.stats.flushes.Add(1)
	for _, p := range job.segs {
		if fi, err := os.Stat(p); err == nil {
			s.stats.logBytes.Add(-fi.Size())
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			// The records are in the manifest's files: the next open
			// removes a segment that holds nothing newer.
			s.log.Warn().Err(err).Str("file", p).Msg("state: could not trim the log after a flush")
		}
	}
	return nil
}

// install makes m the current manifest and collects garbage. The caller
// holds manMu.
func (s *Store) install(m manifest) error {
	if err := writeManifest(s.manDir, m, s.opts.syncFile); err != nil {
		return err
	}
	s.stats.fsyncs.Add(2)
	s.man = m
	s.stats.manifestGen.Store(m.Generation)
	s.refreshFileStats(m)
	if _, err := collectGarbage(s.manDir, s.dataDir, s.opts.KeepManifests, &s.claims); err != nil {
		s.log.Warn().Err(err).Str("dir", s.dir).Msg("state: garbage collection failed; retried after the next flush")
	}
	return nil
}

// flushDue: half the buffer, in records or bytes, is used.
func (s *Store) flushDue() bool {
	return len(s.mem) >= s.opts.flushAt() || s.memBytes >= s.opts.BufferBytes/2
}

func recordBytes(recs []Record) int {
	n := 0
	for i := range recs {
		n += len(recs[i].Key) + len(recs[i].Value)
	}
	return n
}

// relocate points the index entry of r, if it is still r's version, at row
// of d. The caller holds idxMu.
func (s *Store) relocate(r *Record, d *dataFile, row int64) error {
	if r.Op == OpDelete {
		return nil
	}
	p, slot, err := d.locate(row)
	if err != nil {
		return err
	}
	switch r.Op {
	case OpPut:
		if e, ok := s.kv[r.Key]; ok && e.seq == r.Seq {
			e.page, e.slot, e.value = p, slot, nil
			s.kv[r.Key] = e
		}
	case OpEvent:
		if i, ok := slices.BinarySearchFunc(s.events, r.Seq, func(e event, seq uint64) int { return cmpUint(e.seq, seq) }); ok {
			s.events[i].page, s.events[i].slot, s.events[i].value = p, slot, nil
		}
	}
	return nil
}
