package state

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"time"
	"unicode/utf8"
)

// Op is what a record does.
type Op uint8

// The operations a record can carry. Their String forms are the values of the
// op column in the Parquet files.
const (
	OpPut    Op = 1
	OpDelete Op = 2
	OpEvent  Op = 3
)

// String returns "put", "delete" or "event".
func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpEvent:
		return "event"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

func parseOp(s string) (Op, error) {
	switch s {
	case "put":
		return OpPut, nil
	case "delete":
		return OpDelete, nil
	case "event":
		return OpEvent, nil
	}
	return 0, fmt.Errorf("unknown op %q", s)
}

// Record is one write as it is logged and stored: a put, a delete (tombstone)
// or an event. Events have an empty Key.
type Record struct {
	Seq     uint64 // assigned by the store, strictly increasing
	Op      Op
	Key     string
	Value   []byte // the value of a put, the body of an event; empty for a delete
	Service string // who wrote it, as told by the caller of the store
	Time    time.Time
}

// Mutation is one operation of a batch given to Store.Apply.
type Mutation struct {
	Op    Op // OpPut, OpDelete or OpEvent
	Key   string
	Value []byte
}

// MaxKeyLen is the hard limit on key length; Options.MaxKey may lower it.
const MaxKeyLen = 512

// maxServiceLen bounds the service name recorded with each write.
const maxServiceLen = 255

// ValidateKey reports whether key is acceptable: 1..maxLen bytes of UTF-8
// without NUL or other control characters. The error wraps ErrBadKey, or
// ErrTooLarge when the key is only too long.
func ValidateKey(key string, maxLen int) error {
	if maxLen <= 0 || maxLen > MaxKeyLen {
		maxLen = MaxKeyLen
	}
	switch {
	case key == "":
		return fmt.Errorf("%w: empty", ErrBadKey)
	case len(key) > maxLen:
		return fmt.Errorf("%w: key of %d bytes, the limit is %d", ErrTooLarge, len(key), maxLen)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: %q is not UTF-8", ErrBadKey, key)
	}
	for i, r := range key {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("%w: control character %U at byte %d of %q", ErrBadKey, r, i, key)
		}
	}
	return nil
}

// The write-ahead log is a sequence of frames:
//
//	u32 payload length | u32 crc32c(payload) | payload
//
// and a payload is one commit request (a single write or a batch, so a batch
// is atomic across a crash): u32 count, then count records of
//
//	u64 seq | u8 op | i64 unix nanos | u16 len key | u8 len service | u32 len value | key | service | value
const (
	frameHeader  = 8
	recordHeader = 8 + 1 + 8 + 2 + 1 + 4
	// maxFrame bounds a frame so a corrupt length cannot make replay allocate
	// gigabytes; Store.Apply refuses batches that would not fit.
	maxFrame = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func recordSize(r *Record) int {
	return recordHeader + len(r.Key) + len(r.Service) + len(r.Value)
}

// appendFrame encodes recs as one frame at the end of buf.
func appendFrame(buf []byte, recs []Record) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, frameHeader+4)...)
	binary.LittleEndian.PutUint32(buf[start+frameHeader:], uint32(len(recs)))
	for i := range recs {
		r := &recs[i]
		var h [recordHeader]byte
		binary.LittleEndian.PutUint64(h[0:], r.Seq)
		h[8] = byte(r.Op)
		binary.LittleEndian.PutUint64(h[9:], uint64(r.Time.UnixNano()))
		binary.LittleEndian.PutUint16(h[17:], uint16(len(r.Key)))
		h[19] = byte(len(r.Service))
		binary.LittleEndian.PutUint32(h[20:], uint32(len(r.Value)))
		buf = append(buf, h[:]...)
		buf = append(buf, r.Key...)
		buf = append(buf, r.Service...)
		buf = append(buf, r.Value...)
	}
	payload := buf[start+frameHeader:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(payload, castagnoli))
	return buf
}

// decodePayload decodes a frame's payload whose checksum has been verified.
// Values alias payload.
func decodePayload(payload []byte) ([]Record, error) {
	if len(payload) < 4 {
		return nil, fmt.Errorf("payload of %d bytes", len(payload))
	}
	n := binary.LittleEndian.Uint32(payload)
	p := payload[4:]
	if uint64(n)*recordHeader > uint64(len(p)) {
		return nil, fmt.Errorf("count %d does not fit %d bytes", n, len(p))
	}
	recs := make([]Record, 0, n)
	for i := uint32(0); i < n; i++ {
		if len(p) < recordHeader {
			return nil, fmt.Errorf("record %d: truncated header", i)
		}
		kl := int(binary.LittleEndian.Uint16(p[17:]))
		sl := int(p[19])
		vl := int(binary.LittleEndian.Uint32(p[20:]))
		if len(p) < recordHeader+kl+sl+vl {
			return nil, fmt.Errorf("record %d: truncated body", i)
		}
		body := p[recordHeader:]
		recs = append(recs, Record{
			Seq:     binary.LittleEndian.Uint64(p[0:]),
			Op:      Op(p[8]),
			Time:    time.Unix(0, int64(binary.LittleEndian.Uint64(p[9:]))),
			Key:     string(body[:kl]),
			Service: string(body[kl : kl+sl]),
			Value:   body[kl+sl : kl+sl+vl : kl+sl+vl],
		})
		p = p[recordHeader+kl+sl+vl:]
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(p))
	}
	return recs, nil
}
