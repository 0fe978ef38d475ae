// Command statebench compares, in one run on the same machine and workload,
// the state store through its Go API, the state proxy through its Unix
// socket, and SQLite (WAL; synchronous=FULL for the durable comparison,
// NORMAL for reference). Run it with bench/state/bench.sh; docs/STATE.md
// has the results and the goals.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/tori-run/tori-run/state"
	"github.com/tori-run/tori-run/state/client"
	"github.com/tori-run/tori-run/state/proxy"
)

type config struct {
	n        int           // single upserts per run, and point reads
	batch    int           // records per batch
	clients  int           // concurrent clients of the "many" runs
	rateTime time.Duration // how long the rate limiter runs
	skipRate bool
	only     string
	workdir  string
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 100_000, "single durable upserts per run, and random point reads")
	flag.IntVar(&c.batch, "batch", 100, "records per batch in the batch run")
	flag.IntVar(&c.clients, "clients", 16, "concurrent clients")
	flag.DurationVar(&c.rateTime, "rate-time", time.Minute, "how long to measure the rate limiter")
	flag.BoolVar(&c.skipRate, "skip-rate", false, "skip the rate limiter run")
	flag.StringVar(&c.workdir, "dir", "", "work directory (default: a temporary one, removed after)")
	flag.StringVar(&c.only, "only", "", "run only the engines whose name contains this")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile here")
	short := flag.Bool("short", false, "a few seconds: -n 3000 -rate-time 3s (for make test; numbers are only a smoke check)")
	flag.Parse()
	if *short {
		c.n, c.rateTime = 3000, 3*time.Second
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "statebench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "statebench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(c config) error {
	if c.workdir == "" {
		d, err := os.MkdirTemp("", "statebench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		c.workdir = d
	}
	fmt.Printf("# statebench: n=%d, batch=%d, clients=%d, GOMAXPROCS cores=%s\n", c.n, c.batch, c.clients, cores())
	fmt.Printf("# load before: %s\n", loadavg())
	wl := newWorkload(c.n)
	var results []result
	for _, e := range []engine{
		{name: "store (Go API)", open: openStore},
		{name: "proxy (socket)", open: openProxy},
		{name: "SQLite FULL", open: sqliteOpener("FULL")},
		{name: "SQLite NORMAL", open: sqliteOpener("NORMAL")},
	} {
		if !strings.Contains(e.name, c.only) {
			continue
		}
		r, err := measure(c, e, wl)
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		results = append(results, r)
		r.print()
	}
	fmt.Printf("# load after writes/reads: %s; writes retried after a full buffer: %d\n", loadavg(), busy.Load())
	if len(results) == 4 {
		printTable(results, c)
	}
	if !c.skipRate {
		if err := rateRun(c); err != nil {
			return err
		}
	}
	fmt.Printf("# load at end: %s\n", loadavg())
	return nil
}

// kv is what each engine offers the workload.
type kv interface {
	put(ctx context.Context, key string, val []byte) error
	putBatch(ctx context.Context, keys []string, vals [][]byte) error
	get(key string) ([]byte, error)
	scan() (int, error)
	close() error
	dir() string
}

type engine struct {
	name string
	open func(dir string) (kv, error)
}

type result struct {
	name                     string
	put1, putN, batch, reads float64 // ops/s
	scan                     time.Duration
	scanned                  int
	bytes                    int64
}

func (r result) print() {
	fmt.Printf("%-16s put×1 %8.0f/s  put×N %8.0f/s  batch %9.0f rec/s  reads %10.0f/s  scan %v (%d)  disk %.1f MB\n",
		r.name, r.put1, r.putN, r.batch, r.reads, r.scan.Round(time.Millisecond), r.scanned, float64(r.bytes)/1e6)
}

// value is a ~200-byte JSON-ish value, compressible like real state.
func value(rng *rand.Rand, i int) []byte {
	words := []string{"observed", "latency", "queue", "capsule", "metacog", "retry", "budget", "token", "error", "ok", "stale", "fresh"}
	var b strings.Builder
	fmt.Fprintf(&b, `{"id":%d,"at":%d,"score":%d,"note":"`, i, 1_700_000_000+rng.IntN(1_000_000), rng.IntN(1000))
	for b.Len() < 190 {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(' ')
	}
	b.WriteString(`"}`)
	return []byte(b.String())
}

func key(i int) string { return fmt.Sprintf("obs/%06d", i) }

// workload is precomputed so the runs measure the engines, not fmt.
type workload struct {
	keys []string
	vals [][]byte
}

func newWorkload(n int) workload {
	rng := rand.New(rand.NewPCG(7, 7))
	w := workload{keys: make([]string, n), vals: make([][]byte, n)}
	for i := range n {
		w.keys[i], w.vals[i] = key(i), value(rng, i)
	}
	return w
}

func measure(c config, e engine, wl workload) (result, error) {
	r := result{name: e.name}
	dir := filepath.Join(c.workdir, strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(e.name))
	db, err := e.open(dir)
	if err != nil {
		return r, err
	}
	defer func() {
		if db != nil {
			db.close()
		}
	}()
	ctx := context.Background()
	if r.put1, err = writers(ctx, db, 1, wl); err != nil {
		return r, err
	}
	if r.putN, err = writers(ctx, db, c.clients, wl); err != nil {
		return r, err
	}
	if r.batch, err = batches(ctx, db, wl, c.batch); err != nil {
		return r, err
	}
	if r.reads, err = reads(db, wl); err != nil {
		return r, err
	}
	start := time.Now()
	if r.scanned, err = db.scan(); err != nil {
		return r, err
	}
	r.scan = time.Since(start)
	if err := db.close(); err != nil {
		return r, err
	}
	db = nil
	r.bytes, err = du(dir)
	return r, err
}

// writers runs n single upserts split between clients; it returns records/s.
func writers(ctx context.Context, db kv, clients int, wl workload) (float64, error) {
	n := len(wl.keys)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := db.put(ctx, wl.keys[i], wl.vals[i]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func batches(ctx context.Context, db kv, wl workload, size int) (float64, error) {
	n := len(wl.keys)
	start := time.Now()
	for i := 0; i < n; i += size {
		if err := db.putBatch(ctx, wl.keys[i:min(n, i+size)], wl.vals[i:min(n, i+size)]); err != nil {
			return 0, err
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func reads(db kv, wl workload) (float64, error) {
	n := len(wl.keys)
	rng := rand.New(rand.NewPCG(3, 3))
	order := make([]int, n)
	for i := range order {
		order[i] = rng.IntN(n)
	}
	start := time.Now()
	for _, i := range order {
		v, err := db.get(wl.keys[i])
		if err != nil {
			return 0, err
		}
		if len(v) == 0 {
			return 0, errors.New("empty read")
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func du(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	return n, err
}

// The store through its Go API.

type storeKV struct{ s *state.Store }

func openStore(dir string) (kv, error) {
	s, err := state.Open(dir, state.Options{})
	return storeKV{s}, err
}

func (k storeKV) put(ctx context.Context, key string, v []byte) error {
	for {
		_, err := k.s.Put(ctx, "bench", key, v)
		if !errors.Is(err, state.ErrBufferFull) {
			return err
		}
		busy.Add(1) // a client gets 503 and retries: so does the benchmark
	}
}

// busy counts writes refused with a full buffer and retried.
var busy atomic.Int64

func (k storeKV) putBatch(ctx context.Context, keys []string, vals [][]byte) error {
	muts := make([]state.Mutation, len(keys))
	for i := range keys {
		muts[i] = state.Mutation{Op: state.OpPut, Key: keys[i], Value: vals[i]}
	}
	for {
		_, err := k.s.Apply(ctx, "bench", muts)
		if !errors.Is(err, state.ErrBufferFull) {
			return err
		}
		busy.Add(1)
	}
}

func (k storeKV) get(key string) ([]byte, error) {
	e, ok := k.s.Get(key)
	if !ok {
		return nil, fmt.Errorf("no %s", key)
	}
	return e.Value, nil
}

func (k storeKV) scan() (int, error) {
	n := 0
	k.s.Scan("", func(state.Entry) bool { n++; return true })
	return n, nil
}

func (k storeKV) close() error { return k.s.Close() }
func (k storeKV) dir() string  { return k.s.Dir() }

// The proxy through its socket: writes and reads over HTTP/1.1 on a Unix
// socket; batches and scans go to the store (the socket API has neither).

type proxyKV struct {
	storeKV
	srv    *proxy.Server
	cl     *client.Client
	served chan error
}

func openProxy(dir string) (kv, error) {
	s, err := state.Open(dir, state.Options{})
	if err != nil {
		return nil, err
	}
	srv, err := proxy.New(s, proxy.Options{Capsule: "bench", RatePerMin: 1 << 30, Burst: 1 << 20, MaxConns: 256,
		Identify: func(int32) (string, error) { return "bench", nil }})
	if err != nil {
		s.Close()
		return nil, err
	}
	sock := filepath.Join(os.TempDir(), fmt.Sprintf("statebench-%d.sock", os.Getpid()))
	l, err := proxy.Listen(sock)
	if err != nil {
		s.Close()
		return nil, err
	}
	p := &proxyKV{storeKV: storeKV{s}, srv: srv, cl: client.New(sock, client.Options{MaxRetries: 100}), served: make(chan error, 1)}
	go func() { p.served <- srv.Serve(l) }()
	return p, nil
}

func (p *proxyKV) put(ctx context.Context, key string, v []byte) error { return p.cl.Put(ctx, key, v) }
func (p *proxyKV) get(key string) ([]byte, error)                      { return p.cl.Get(context.Background(), key) }

func (p *proxyKV) close() error {
	p.cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := p.srv.Shutdown(ctx)
	if e := <-p.served; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return errors.Join(err, p.storeKV.close())
}

// SQLite through database/sql.

type sqliteKV struct {
	db     *sql.DB
	path   string
	upsert *sql.Stmt
	sel    *sql.Stmt
	seq    atomic.Int64 // stands in for the store's seq
}

const upsertSQL = `INSERT INTO kv(key, value, seq, service, ts) VALUES (?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET value = excluded.value, seq = excluded.seq, service = excluded.service, ts = excluded.ts`

func sqliteOpener(sync string) func(string) (kv, error) {
	return func(dir string) (kv, error) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		path := filepath.Join(dir, "state.db")
		db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_synchronous="+sync+"&_busy_timeout=60000&_txlock=immediate")
		if err != nil {
			return nil, err
		}
		db.SetMaxOpenConns(32)
		if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, seq INTEGER NOT NULL, service TEXT NOT NULL, ts INTEGER NOT NULL)`); err != nil {
			db.Close()
			return nil, err
		}
		k := &sqliteKV{db: db, path: path}
		if k.upsert, err = db.Prepare(upsertSQL); err == nil {
			k.sel, err = db.Prepare(`SELECT value FROM kv WHERE key = ?`)
		}
		if err != nil {
			db.Close()
			return nil, err
		}
		return k, nil
	}
}

func (k *sqliteKV) put(ctx context.Context, key string, v []byte) error {
	_, err := k.upsert.ExecContext(ctx, key, v, k.seq.Add(1), "bench", time.Now().UnixNano())
	return err
}

func (k *sqliteKV) putBatch(ctx context.Context, keys []string, vals [][]byte) error {
	tx, err := k.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	st := tx.StmtContext(ctx, k.upsert)
	for i := range keys {
		if _, err := st.ExecContext(ctx, keys[i], vals[i], k.seq.Add(1), "bench", time.Now().UnixNano()); err != nil {
			_ = tx.Rollback() // the Exec error is the one to report
			return err
		}
	}
	return tx.Commit()
}

func (k *sqliteKV) get(key string) ([]byte, error) {
	var v []byte
	err := k.sel.QueryRow(key).Scan(&v)
	return v, err
}

func (k *sqliteKV) scan() (int, error) {
	rows, err := k.db.Query(`SELECT key, value, seq, service, ts FROM kv ORDER BY key`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var key, svc string
		var v []byte
		var seq, ts int64
		if err := rows.Scan(&key, &v, &seq, &svc, &ts); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}

func (k *sqliteKV) close() error { return k.db.Close() }
func (k *sqliteKV) dir() string  { return filepath.Dir(k.path) }

func printTable(rs []result, c config) {
	base := rs[2] // SQLite FULL
	fmt.Printf("\n| engine | upserts, 1 client | upserts, %d clients | batches of %d | random point reads | full scan (%d keys) | bytes on disk |\n", c.clients, c.batch, rs[0].scanned)
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Printf("| %s | %.0f/s (%.2f×) | %.0f/s (%.2f×) | %.0f rec/s (%.2f×) | %.0f/s (%.1f×) | %v | %.1f MB (%.2f×) |\n",
			r.name, r.put1, r.put1/base.put1, r.putN, r.putN/base.putN, r.batch, r.batch/base.batch,
			r.reads, r.reads/base.reads, r.scan.Round(time.Millisecond), float64(r.bytes)/1e6, float64(r.bytes)/float64(base.bytes))
	}
	fmt.Println("\n(×: ratio to SQLite FULL)")
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func cores() string {
	out, err := exec.Command("nproc").Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}
