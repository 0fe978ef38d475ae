package proxy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/tori-run/tori-run/state"
)

// maxEventsPerPage bounds GET /v1/events.
const maxEventsPerPage = 1000

// maxEventPageBytes bounds the event bodies of one page of GET /v1/events
// (at least one event is always sent).
const maxEventPageBytes = 4 << 20

// Event is an element of GET /v1/events.
type Event struct {
	Seq     uint64          `json:"seq"`
	Time    time.Time       `json:"ts"`
	Service string          `json:"service"`
	Event   json.RawMessage `json:"event"`
}

// PostEventResponse answers POST /v1/events.
type PostEventResponse struct {
	Seq uint64 `json:"seq"`
}

type handler func(w http.ResponseWriter, r *http.Request, service string)

func (s *Server) routes(admin bool) http.Handler {
	mux := http.NewServeMux()
	h := func(pattern string, write bool, fn handler) {
		mux.Handle(pattern, s.wrap(admin, write, fn))
	}
	h("PUT /v1/kv/{key...}", true, s.put)
	h("GET /v1/kv/{key...}", false, s.get)
	h("DELETE /v1/kv/{key...}", true, s.del)
	h("GET /v1/kv", false, s.list)
	h("POST /v1/events", true, s.postEvent)
	h("GET /v1/events", false, s.getEvents)
	h("POST /v1/batch", true, s.batch)
	if admin {
		h("GET /v1/export", false, s.export)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// statusWriter remembers the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

// wrap identifies the caller, spends a token (unless admin) and records
// metrics around fn.
func (s *Server) wrap(admin, write bool, fn handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w := &statusWriter{ResponseWriter: rw, code: http.StatusOK}
		defer func() { s.observe(r.Method, w.code, write, time.Since(start)) }()
		service := s.opts.AdminService
		if !admin {
			var ok bool
			if service, ok = s.identify(w, r); !ok {
				return
			}
			if !s.admit(w) {
				return
			}
		}
		fn(w, r, service)
	})
}

func (s *Server) observe(method string, code int, write bool, d time.Duration) {
	m := s.opts.Metrics
	if m == nil {
		return
	}
	m.requests.WithLabelValues(s.opts.Capsule, method, strconv.Itoa(code)).Inc()
	if write && code < 300 {
		m.writeSeconds.WithLabelValues(s.opts.Capsule).Observe(d.Seconds())
	}
}

// identify returns the calling service, found when its connection was
// accepted (identifyPeer).
func (s *Server) identify(w http.ResponseWriter, r *http.Request) (string, bool) {
	p := peerFrom(r.Context())
	if p == nil {
		writeError(w, http.StatusForbidden, "caller unknown: not a connection accepted by the state proxy")
		return "", false
	}
	if p.err != nil {
		s.opts.Log.Warn().Err(p.err).Str("capsule", s.opts.Capsule).Int32("pid", p.pid).Msg("state proxy: refused an unknown caller")
		writeError(w, http.StatusForbidden, "caller unknown: "+p.err.Error())
		return "", false
	}
	return p.service, true
}

func (s *Server) key(w http.ResponseWriter, r *http.Request) (string, bool) {
	key := r.PathValue("key")
	if err := state.ValidateKey(key, s.opts.MaxKey); err != nil {
		s.storeError(w, r, err)
		return "", false
	}
	return key, true
}

func (s *Server) put(w http.ResponseWriter, r *http.Request, service string) {
	key, ok := s.key(w, r)
	if !ok {
		return
	}
	body, ok := readBody(w, r, s.opts.MaxValue)
	if !ok {
		return
	}
	if _, err := s.store.Put(r.Context(), service, key, body); err != nil {
		s.storeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, _ string) {
	key, ok := s.key(w, r)
	if !ok {
		return
	}
	e, found, err := s.store.Read(key)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if !found {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no key %q", key))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Tori-Seq", strconv.FormatUint(e.Seq, 10))
	w.Header().Set("Content-Length", strconv.Itoa(len(e.Value)))
	_, _ = w.Write(e.Value)
}

func (s *Server) del(w http.ResponseWriter, r *http.Request, service string) {
	key, ok := s.key(w, r)
	if !ok {
		return
	}
	if _, err := s.store.Delete(r.Context(), service, key); err != nil {
		s.storeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, _ string) {
	keys := s.store.List(r.URL.Query().Get("prefix"))
	if keys == nil {
		keys = []string{}
	}
	writeJSON(w, http.StatusOK, keys)
}

func (s *Server) postEvent(w http.ResponseWriter, r *http.Request, service string) {
	body, ok := readBody(w, r, s.opts.MaxValue)
	if !ok {
		return
	}
	if !json.Valid(body) {
		writeError(w, http.StatusBadRequest, "an event must be one JSON value")
		return
	}
	seq, err := s.store.AppendEvent(r.Context(), service, body)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, PostEventResponse{Seq: seq})
}

func (s *Server) getEvents(w http.ResponseWriter, r *http.Request, _ string) {
	q := r.URL.Query()
	since, err := uintParam(q.Get("since"), 0)
	if err != nil {
		writeError(w, http.StatusBadRequest, "since: "+err.Error())
		return
	}
	limit, err := uintParam(q.Get("limit"), 100)
	if err != nil || limit == 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be 1..%d", maxEventsPerPage))
		return
	}
	// Streamed: one event body at a time from disk, the page cut once its
	// bodies weigh maxEventPageBytes (the client asks again with since =
	// the last seq it got).
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 32<<10)
	enc := json.NewEncoder(bw)
	_ = bw.WriteByte('[')
	first := true
	err = s.store.EachEvent(since, int(min(limit, maxEventsPerPage)), maxEventPageBytes, func(e state.Record) error {
		if !first {
			_ = bw.WriteByte(',')
		}
		first = false
		return enc.Encode(Event{Seq: e.Seq, Time: e.Time.UTC(), Service: e.Service, Event: json.RawMessage(e.Value)})
	})
	if err != nil {
		// The status is sent: cut the body short so the client sees bad JSON
		// rather than a silently short page.
		s.opts.Log.Error().Err(err).Str("capsule", s.opts.Capsule).Msg("state proxy: reading events failed")
		_ = bw.Flush()
		return
	}
	_, _ = bw.WriteString("]\n")
	_ = bw.Flush()
}

func uintParam(v string, def uint64) (uint64, error) {
	if v == "" {
		return def, nil
	}
	return strconv.ParseUint(v, 10, 64)
}

func (s *Server) export(w http.ResponseWriter, r *http.Request, _ string) {
	f := state.Format(r.URL.Query().Get("format"))
	if f == "" {
		f = state.FormatParquet
	}
	if f != state.FormatParquet && f != state.FormatJSONL {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("format must be %q or %q", state.FormatParquet, state.FormatJSONL))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := s.store.Export(w, f); err != nil {
		s.opts.Log.Error().Err(err).Str("capsule", s.opts.Capsule).Msg("state proxy: export failed")
	}
}

// BatchOp is one operation of POST /v1/batch: {"op":"put","key":K,"value":V}
// (V a string; "value_base64" for bytes), {"op":"delete","key":K} or
// {"op":"event","event":JSON}.
type BatchOp struct {
	Op          string          `json:"op"`
	Key         string          `json:"key,omitempty"`
	Value       *string         `json:"value,omitempty"`
	ValueBase64 []byte          `json:"value_base64,omitempty"`
	Event       json.RawMessage `json:"event,omitempty"`
}

// BatchRequest is the body of POST /v1/batch.
type BatchRequest struct {
	Ops []BatchOp `json:"ops"`
}

// maxBatchBody bounds the body of POST /v1/batch.
const maxBatchBody = 16 << 20

// batch applies every operation atomically with one durable commit (one
// fsync shared with whatever else is committing) and answers {"seq": N},
// the seq of its last record. It spends one token: a batch is one request.
func (s *Server) batch(w http.ResponseWriter, r *http.Request, service string) {
	body, ok := readBody(w, r, maxBatchBody)
	if !ok {
		return
	}
	var req BatchRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "batch: body must be {\"ops\": [...]}: "+err.Error())
		return
	}
	if len(req.Ops) == 0 {
		writeError(w, http.StatusBadRequest, "batch: no ops")
		return
	}
	muts := make([]state.Mutation, len(req.Ops))
	for i, op := range req.Ops {
		m := state.Mutation{Key: op.Key}
		switch op.Op {
		case "put":
			m.Op = state.OpPut
			switch {
			case op.Value != nil && op.ValueBase64 != nil:
				writeError(w, http.StatusBadRequest, fmt.Sprintf("batch op %d: value and value_base64 both given", i))
				return
			case op.Value != nil:
				m.Value = []byte(*op.Value)
			default:
				m.Value = op.ValueBase64
			}
		case "delete":
			m.Op = state.OpDelete
		case "event":
			m.Op = state.OpEvent
			if op.Key != "" || !json.Valid(op.Event) {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("batch op %d: an event has no key and one JSON value in \"event\"", i))
				return
			}
			m.Value = op.Event
		default:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("batch op %d: op %q: expected put, delete or event", i, op.Op))
			return
		}
		if m.Op != state.OpEvent {
			if err := state.ValidateKey(m.Key, s.opts.MaxKey); err != nil {
				s.storeError(w, r, fmt.Errorf("batch op %d: %w", i, err))
				return
			}
		}
		if len(m.Value) > s.opts.MaxValue {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("batch op %d: value of %d bytes, the limit is %d", i, len(m.Value), s.opts.MaxValue))
			return
		}
		muts[i] = m
	}
	seq, err := s.store.Apply(r.Context(), service, muts)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, PostEventResponse{Seq: seq})
}
