package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/tori-run/tori-run/state"
)

// Options configure a Server. Identify is required.
type Options struct {
	// Capsule names the capsule in metrics and logs.
	Capsule string
	// RatePerMin is MAX_TOKENS_PER_MIN: requests a minute the capsule's
	// services may make together (default 200), at most MaxRatePerMin.
	RatePerMin int
	// MaxRatePerMin is the operator's ceiling on RatePerMin (the host
	// configuration's state.max_tokens_per_min; default
	// DefaultMaxRatePerMin): a capsule cannot ask for more.
	MaxRatePerMin int
	// Burst is how many requests may come at once on a full bucket (default
	// RatePerMin/10, at least 1).
	Burst int
	// MaxKey and MaxValue bound keys and values (413 above; defaults: the
	// store's defaults, 512 bytes and 1 MiB).
	MaxKey, MaxValue int
	// MaxConns bounds the connections open at once (default 64); more wait
	// in the listen backlog.
	MaxConns int
	// Identify maps the pid (in our PID namespace) of the process that
	// opened a connection to the service it belongs to (through its
	// cgroup). It is called once per connection, as it is accepted, while
	// the proxy holds a pidfd of that process and checks afterwards that the
	// pid was still its own. An error refuses the connection's requests with
	// 403 and is shown to the caller: it must not name host pids.
	Identify func(pid int32) (service string, err error)
	// AdminService is the service recorded for writes through AdminHandler
	// (default "tori-run").
	AdminService string
	// Timeouts; the defaults suit small requests on a local socket.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// Metrics, if set, records this capsule's requests (see NewMetrics).
	Metrics *Metrics
	// Log receives request failures. The zero Logger is silent.
	Log zerolog.Logger

	now func() time.Time // tests fake the clock of the token bucket
}

// DefaultMaxRatePerMin is the default ceiling on MAX_TOKENS_PER_MIN.
const DefaultMaxRatePerMin = 6000

func (o Options) withDefaults() Options {
	if o.RatePerMin <= 0 {
		o.RatePerMin = 200
	}
	if o.MaxRatePerMin <= 0 {
		o.MaxRatePerMin = DefaultMaxRatePerMin
	}
	if o.RatePerMin > o.MaxRatePerMin {
		o.Log.Warn().Str("capsule", o.Capsule).Int("max_tokens_per_min", o.RatePerMin).Int("ceiling", o.MaxRatePerMin).
			Msg("state proxy: MAX_TOKENS_PER_MIN is over the host's ceiling; using the ceiling")
		o.RatePerMin = o.MaxRatePerMin
	}
	if o.Burst <= 0 {
		o.Burst = max(1, o.RatePerMin/10)
	}
	if o.MaxKey <= 0 || o.MaxKey > state.MaxKeyLen {
		o.MaxKey = state.MaxKeyLen
	}
	if o.MaxValue <= 0 {
		o.MaxValue = state.DefaultMaxValue
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 64
	}
	if o.AdminService == "" {
		o.AdminService = "tori-run"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.ReadHeaderTimeout, 5*time.Second)
	def(&o.ReadTimeout, 30*time.Second)
	def(&o.WriteTimeout, 30*time.Second)
	def(&o.IdleTimeout, 2*time.Minute)
	if o.now == nil {
		o.now = time.Now
	}
	return o
}

// maxHeaderBytes bounds request headers; keys travel in the path.
const maxHeaderBytes = 16 << 10

// Server is one capsule's state proxy.
type Server struct {
	store   *state.Store
	opts    Options
	limiter *rate.Limiter
	admin   http.Handler

	mu      sync.Mutex // guards servers and shut
	servers []*http.Server
	shut    bool // Shutdown was called: a Serve that comes later returns at once
}

// New creates the proxy for store. Serve it with Serve; the lead's daemon
// may also serve AdminHandler on a host-only socket.
func New(store *state.Store, opts Options) (*Server, error) {
	if store == nil {
		return nil, errors.New("state proxy: no store")
	}
	if opts.Identify == nil {
		return nil, errors.New("state proxy: Options.Identify is required (pid → service)")
	}
	opts = opts.withDefaults()
	s := &Server{
		store: store, opts: opts,
		limiter: rate.NewLimiter(rate.Limit(float64(opts.RatePerMin)/60), opts.Burst),
	}
	s.admin = s.routes(true)
	if opts.Metrics != nil {
		opts.Metrics.track(opts.Capsule, store)
	}
	return s, nil
}

// Handler is the capsule-facing API. It expects the context of connections
// accepted by Serve (peer credentials); other requests get 403.
func (s *Server) Handler() http.Handler { return s.routes(false) }

// AdminHandler serves the API without rate limit or peer check, writes
// recorded as Options.AdminService, plus GET /v1/export?format=parquet|jsonl.
// Serve it only where the capsule cannot connect.
func (s *Server) AdminHandler() http.Handler { return s.admin }

// Serve accepts connections on l (a Unix socket, see Listen) until Shutdown.
// It returns http.ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	return s.serve(l, s.Handler(), s.opts.Identify)
}

// ServeAdmin serves AdminHandler on l (a host-only socket) until Shutdown.
func (s *Server) ServeAdmin(l net.Listener) error {
	return s.serve(l, s.admin, nil)
}

func (s *Server) serve(l net.Listener, h http.Handler, identify func(int32) (string, error)) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		ReadTimeout:       s.opts.ReadTimeout,
		WriteTimeout:      s.opts.WriteTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if cc, ok := c.(*credConn); ok {
				return context.WithValue(ctx, peerKey{}, cc.peer)
			}
			return ctx
		},
	}
	srv.SetKeepAlivesEnabled(true)
	s.mu.Lock()
	if s.shut {
		s.mu.Unlock()
		l.Close()
		return http.ErrServerClosed
	}
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	cl, err := newCredListener(l, s.opts.MaxConns, identify)
	if err != nil {
		return err
	}
	return srv.Serve(cl)
}

// Shutdown stops accepting connections and waits for requests in flight
// (up to ctx). It does not close the store.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	servers := s.servers
	s.servers, s.shut = nil, true
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("shut down state proxy of capsule %s: %w", s.opts.Capsule, err))
		}
	}
	if s.opts.Metrics != nil {
		s.opts.Metrics.forget(s.opts.Capsule)
	}
	return errors.Join(errs...)
}

// retryAfter is the Retry-After header for a delay: whole seconds, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// admit spends one token; when the bucket is empty it answers 429 with the
// time until a token is due and returns false.
func (s *Server) admit(w http.ResponseWriter) bool {
	now := s.opts.now()
	r := s.limiter.ReserveN(now, 1)
	if !r.OK() {
		writeError(w, http.StatusTooManyRequests, "rate limit: burst too small")
		return false
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		if s.opts.Metrics != nil {
			s.opts.Metrics.rateLimited.WithLabelValues(s.opts.Capsule).Inc()
		}
		w.Header().Set("Retry-After", retryAfter(d))
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("rate limit of %d requests a minute reached; retry in %v", s.opts.RatePerMin, d.Round(time.Millisecond)))
		return false
	}
	return true
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// storeError answers a failed store call.
func (s *Server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, state.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
	case errors.Is(err, state.ErrBadKey):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, state.ErrQuota):
		// The operator's quota: 507; only deletes free space.
		writeError(w, http.StatusInsufficientStorage, err.Error())
	case errors.Is(err, state.ErrNoSpace):
		// A full disk: 507, with when to retry (the store retries its log
		// by itself once space is back).
		w.Header().Set("Retry-After", retryAfter(s.store.RetryAfter()))
		writeError(w, http.StatusInsufficientStorage, err.Error())
	case errors.Is(err, state.ErrBufferFull), errors.Is(err, state.ErrFailed):
		w.Header().Set("Retry-After", retryAfter(s.store.RetryAfter()))
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, state.ErrClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		s.opts.Log.Error().Err(err).Str("capsule", s.opts.Capsule).Str("path", r.URL.Path).Msg("state proxy: store failed")
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// readBody reads at most limit bytes; it answers 413 and returns false above.
func readBody(w http.ResponseWriter, r *http.Request, limit int) ([]byte, bool) {
	if r.ContentLength > int64(limit) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes, the limit is %d", r.ContentLength, limit))
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over the limit of %d bytes", limit))
		} else {
			writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		}
		return nil, false
	}
	return body, true
}
