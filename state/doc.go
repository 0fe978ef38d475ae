// Package state is a capsule's durable key-value store and event log: the
// storage half of the state proxy (SPEC §4).
//
// A write is acknowledged only once it is in the write-ahead log and the log
// is fsynced; writers that arrive while a sync is in flight share the next one
// (group commit). Acknowledged records wait in a bounded buffer until they are
// flushed into an immutable Parquet file named by the SHA-256 of its content;
// a new immutable manifest listing the live files is then made current by an
// atomic rename and an fsync of its folder, and only after that is the log
// trimmed. Every read is served from an in-memory index.
//
// The directory layout is an interface (docs/STATE.md): DuckDB or pyarrow can
// read data/*.parquet as it is on disk. Only one process may own a directory;
// Open takes an exclusive lock and a second Open fails with ErrLocked.
//
// When not to use it: state is sized for a capsule's coordination state (the
// whole live data set is held in memory), not for bulk data. It is a leaf: it
// knows nothing of capsules or services beyond the name recorded with each
// write; the proxy in state/proxy decides who is calling.
package state
