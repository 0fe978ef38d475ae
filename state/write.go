package state

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

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
