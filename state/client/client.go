// Package client talks to a capsule's state proxy over its Unix socket
// (SPEC §4): what `tori-run state get|put|ls|export` and Go services use.
// It retries 429 and 503 answers after their Retry-After, a bounded number
// of times. It imports nothing of tori-run.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// SocketEnv is the variable that holds the socket path inside a capsule.
const SocketEnv = "TORI_STATE_SOCKET"

// ErrNotFound: no such key.
var ErrNotFound = errors.New("key not found")

// StatusError is an answer other than the expected one.
type StatusError struct {
	Code       int
	Message    string        // the proxy's JSON error, or the body
	RetryAfter time.Duration // from Retry-After, if any
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("state proxy: %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// Options tune a Client.
type Options struct {
	// MaxRetries is how many times a request refused with 429 or 503 is
	// retried after its Retry-After (default 5; negative: never).
	MaxRetries int
	// MaxRetryWait caps one wait (default 60s).
	MaxRetryWait time.Duration
	// Timeout bounds one attempt (default 30s).
	Timeout time.Duration
}

// Client is a state proxy client; safe for concurrent use.
type Client struct {
	hc   *http.Client
	opts Options
	sock string
}

// New returns a client of the proxy listening on the Unix socket at path.
func New(path string, opts Options) *Client {
	if opts.MaxRetries == 0 {
		opts.MaxRetries = 5
	}
	if opts.MaxRetryWait <= 0 {
		opts.MaxRetryWait = time.Minute
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
	}
	return &Client{hc: &http.Client{Transport: tr, Timeout: opts.Timeout}, opts: opts, sock: path}
}

// FromEnv returns a client of the socket named by TORI_STATE_SOCKET.
func FromEnv(opts Options) (*Client, error) {
	p := os.Getenv(SocketEnv)
	if p == "" {
		return nil, fmt.Errorf("%s is not set: not inside a capsule with state", SocketEnv)
	}
	return New(p, opts), nil
}

// Close releases idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

func keyPath(key string) string { return "/v1/kv/" + url.PathEscape(key) }

// Get returns key's value, or ErrNotFound.
func (c *Client) Get(ctx context.Context, key string) ([]byte, error) {
	body, err := c.do(ctx, http.MethodGet, keyPath(key), nil, http.StatusOK)
	if err != nil {
		var se *StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			return nil, fmt.Errorf("get %q: %w", key, ErrNotFound)
		}
		return nil, fmt.Errorf("get %q: %w", key, err)
	}
	return body, nil
}

// Put stores value under key; it returns once the write is durable.
func (c *Client) Put(ctx context.Context, key string, value []byte) error {
	if _, err := c.do(ctx, http.MethodPut, keyPath(key), value, http.StatusNoContent); err != nil {
		return fmt.Errorf("put %q: %w", key, err)
	}
	return nil
}

// Delete removes key.
func (c *Client) Delete(ctx context.Context, key string) error {
	if _, err := c.do(ctx, http.MethodDelete, keyPath(key), nil, http.StatusNoContent); err != nil {
		return fmt.Errorf("delete %q: %w", key, err)
	}
	return nil
}

// List returns the keys starting with prefix, sorted.
func (c *Client) List(ctx context.Context, prefix string) ([]string, error) {
	body, err := c.do(ctx, http.MethodGet, "/v1/kv?prefix="+url.QueryEscape(prefix), nil, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", prefix, err)
	}
	var keys []string
	if err := json.Unmarshal(body, &keys); err != nil {
		return nil, fmt.Errorf("list %q: decode answer: %w", prefix, err)
	}
	return keys, nil
}

// Op is one operation of a batch: a put (Value), a delete, or an event
// (Event, no Key).
type Op struct {
	Delete bool
	Key    string
	Value  []byte
	Event  json.RawMessage
}

// Batch applies ops atomically, with one durable commit; it returns the seq
// of the last record.
func (c *Client) Batch(ctx context.Context, ops []Op) (uint64, error) {
	type wireOp struct {
		Op          string          `json:"op"`
		Key         string          `json:"key,omitempty"`
		Value       *string         `json:"value,omitempty"`
		ValueBase64 []byte          `json:"value_base64,omitempty"`
		Event       json.RawMessage `json:"event,omitempty"`
	}
	wire := make([]wireOp, len(ops))
	for i, op := range ops {
		switch {
		case op.Event != nil:
			wire[i] = wireOp{Op: "event", Event: op.Event}
		case op.Delete:
			wire[i] = wireOp{Op: "delete", Key: op.Key}
		case utf8.Valid(op.Value):
			v := string(op.Value)
			wire[i] = wireOp{Op: "put", Key: op.Key, Value: &v}
		default:
			wire[i] = wireOp{Op: "put", Key: op.Key, ValueBase64: op.Value}
		}
	}
	req, err := json.Marshal(struct {
		Ops []wireOp `json:"ops"`
	}{wire})
	if err != nil {
		return 0, fmt.Errorf("batch: %w", err)
	}
	body, err := c.do(ctx, http.MethodPost, "/v1/batch", req, http.StatusOK)
	if err != nil {
		return 0, fmt.Errorf("batch of %d: %w", len(ops), err)
	}
	var out struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return 0, fmt.Errorf("batch: decode answer: %w", err)
	}
	return out.Seq, nil
}

// Event is an entry of the event log.
type Event struct {
	Seq     uint64          `json:"seq"`
	Time    time.Time       `json:"ts"`
	Service string          `json:"service"`
	Event   json.RawMessage `json:"event"`
}

// AppendEvent appends a JSON event and returns its seq.
func (c *Client) AppendEvent(ctx context.Context, event json.RawMessage) (uint64, error) {
	body, err := c.do(ctx, http.MethodPost, "/v1/events", event, http.StatusOK)
	if err != nil {
		return 0, fmt.Errorf("append event: %w", err)
	}
	var out struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return 0, fmt.Errorf("append event: decode answer: %w", err)
	}
	return out.Seq, nil
}

// Events returns up to limit events after seq since.
func (c *Client) Events(ctx context.Context, since uint64, limit int) ([]Event, error) {
	p := fmt.Sprintf("/v1/events?since=%d&limit=%d", since, limit)
	body, err := c.do(ctx, http.MethodGet, p, nil, http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("events since %d: %w", since, err)
	}
	var evs []Event
	if err := json.Unmarshal(body, &evs); err != nil {
		return nil, fmt.Errorf("events since %d: decode answer: %w", since, err)
	}
	return evs, nil
}

// Export writes a compacted copy of the state ("parquet" or "jsonl") to w.
// Only the proxy's admin socket serves it.
func (c *Client) Export(ctx context.Context, w io.Writer, format string) error {
	body, err := c.do(ctx, http.MethodGet, "/v1/export?format="+url.QueryEscape(format), nil, http.StatusOK)
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if _, err := w.Write(body); err != nil {
		return fmt.Errorf("export: write: %w", err)
	}
	return nil
}

// do sends a request, retrying 429 and 503 after their Retry-After.
func (c *Client) do(ctx context.Context, method, path string, body []byte, want int) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		out, err := c.once(ctx, method, path, body, want)
		var se *StatusError
		if !errors.As(err, &se) || (se.Code != http.StatusTooManyRequests && se.Code != http.StatusServiceUnavailable) || attempt >= c.opts.MaxRetries {
			return out, err
		}
		wait := min(max(se.RetryAfter, time.Second), c.opts.MaxRetryWait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (while waiting to retry after: %w)", ctx.Err(), err)
		}
	}
}

func (c *Client) once(ctx context.Context, method, path string, body []byte, want int) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://state"+path, rd)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("state socket %s: %w", c.sock, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode == want {
		return data, nil
	}
	se := &StatusError{Code: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	var eb struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
		se.Message = eb.Error
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
		se.RetryAfter = time.Duration(s) * time.Second
	}
	return nil, se
}
