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
