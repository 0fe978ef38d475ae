// Package stateadmin is the host's way to a capsule's state, for tori-run
// state: through the running instance's admin socket (root only), or, when
// the capsule does not run, the store opened directly; and the offline
// check and repair of a stopped capsule's state folder.
package stateadmin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"

	"github.com/tori-run/tori-run/layout"
	"github.com/tori-run/tori-run/state"
	"github.com/tori-run/tori-run/state/client"
)

// CapsuleState reads and writes a capsule's state for tori-run state:
// through the running capsule's admin socket, or, when it does not run, the
// store opened directly.
type CapsuleState interface {
	Get(ctx context.Context, key string) ([]byte, error) // ErrNoKey when absent
	Put(ctx context.Context, key string, value []byte) error
	List(ctx context.Context, prefix string) ([]string, error)
	Export(ctx context.Context, w io.Writer, format string) error // "parquet" or "jsonl"
	Close() error
}

// ErrNoKey is a key with no value.
var ErrNoKey = errors.New("no such key")

// Open returns the way to a capsule's state.
func Open(root, stateRoot, capsule string) (CapsuleState, error) {
	dirs, _ := filepath.Glob(layout.Layout{Root: root}.InstanceGlob(capsule))
	for _, d := range dirs {
		s := layout.InstanceAt(d).AdminSocket
		if c, err := net.Dial("unix", s); err == nil {
			c.Close()
			return proxyState{client.New(s, client.Options{})}, nil
		}
	}
	st, err := state.Open(layout.Layout{StateRoot: stateRoot}.CapsuleState(capsule), state.Options{})
	if err != nil {
		return nil, err
	}
	return storeState{st}, nil
}

type proxyState struct{ *client.Client }

func (p proxyState) Get(ctx context.Context, key string) ([]byte, error) {
	v, err := p.Client.Get(ctx, key)
	if errors.Is(err, client.ErrNotFound) {
		return nil, fmt.Errorf("%q: %w", key, ErrNoKey)
	}
	return v, err
}

func (p proxyState) Close() error { p.Client.Close(); return nil }

type storeState struct{ st *state.Store }

func (s storeState) Get(_ context.Context, key string) ([]byte, error) {
	e, ok := s.st.Get(key)
	if !ok {
		return nil, fmt.Errorf("%q: %w", key, ErrNoKey)
	}
	return e.Value, nil
}

func (s storeState) Put(ctx context.Context, key string, value []byte) error {
	_, err := s.st.Put(ctx, "tori-run", key, value)
	return err
}

func (s storeState) List(_ context.Context, prefix string) ([]string, error) {
	return s.st.List(prefix), nil
}

func (s storeState) Export(_ context.Context, w io.Writer, format string) error {
	f := state.FormatJSONL
	if format == "parquet" {
		f = state.FormatParquet
	}
	return s.st.Export(w, f)
}

func (s storeState) Close() error { return s.st.Close() }

// Report is what Check found or Repair did.
type Report = state.Report

// Check verifies a stopped capsule's state folder (every data file
// against its SHA-256 name, every log frame) without changing it.
func Check(stateRoot, capsule string) (Report, error) {
	return state.Check(layout.Layout{StateRoot: stateRoot}.CapsuleState(capsule))
}

// Repair rewrites a stopped capsule's damaged state folder keeping
// every intact record; the report's Problems say what it dropped.
func Repair(stateRoot, capsule string) (Report, error) {
	return state.Repair(layout.Layout{StateRoot: stateRoot}.CapsuleState(capsule), state.Options{})
}
