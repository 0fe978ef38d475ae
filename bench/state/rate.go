package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tori-run/tori-run/state"
	"github.com/tori-run/tori-run/state/client"
	"github.com/tori-run/tori-run/state/proxy"
)

// rateRun drives proxies with clients that retry 5 ms after a 429 for
// c.rateTime, and compares the admitted rate with the setting. The burst is
// spent first, so the rate is measured after it: (admitted - burst) / time.
func rateRun(c config) error {
	fmt.Printf("\n## rate limiter: %v, 8 clients a proxy, retrying 5 ms after each 429\n\n", c.rateTime)
	fmt.Println("| MAX_TOKENS_PER_MIN | burst | admitted | refused (429) | admitted rate after the burst | deviation |")
	fmt.Println("|---|---|---|---|---|---|")
	settings := []struct{ perMin, burst int }{{200, 20}, {6000, 100}}
	type out struct {
		admitted, refused int64
		elapsed           time.Duration
		err               error
	}
	outs := make([]out, len(settings))
	var wg sync.WaitGroup
	for i, st := range settings {
		wg.Go(func() {
			a, r, d, err := rateOne(c, i, st.perMin, st.burst)
			outs[i] = out{a, r, d, err}
		})
	}
	wg.Wait()
	for i, st := range settings {
		o := outs[i]
		if o.err != nil {
			return o.err
		}
		rate := float64(o.admitted-int64(st.burst)) / o.elapsed.Minutes()
		fmt.Printf("| %d | %d | %d | %d | %.1f/min | %+.2f%% |\n", st.perMin, st.burst, o.admitted, o.refused, rate, 100*(rate-float64(st.perMin))/float64(st.perMin))
	}
	return nil
}

func rateOne(c config, i, perMin, burst int) (admitted, refused int64, elapsed time.Duration, err error) {
	dir := filepath.Join(c.workdir, fmt.Sprintf("rate-%d", i))
	s, err := state.Open(dir, state.Options{})
	if err != nil {
		return 0, 0, 0, err
	}
	defer s.Close()
	srv, err := proxy.New(s, proxy.Options{Capsule: "rate", RatePerMin: perMin, Burst: burst, Identify: func(int32) (string, error) { return "bench", nil }})
	if err != nil {
		return 0, 0, 0, err
	}
	sock := filepath.Join(os.TempDir(), fmt.Sprintf("statebench-rate-%d-%d.sock", os.Getpid(), i))
	l, err := proxy.Listen(sock)
	if err != nil {
		return 0, 0, 0, err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err == nil {
			err = <-served
			_ = err // http.ErrServerClosed
		}
	}()
	cl := client.New(sock, client.Options{MaxRetries: -1})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), c.rateTime)
	defer cancel()
	var a, r atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range 8 {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				err := cl.Put(ctx, fmt.Sprintf("w%d/%d", w, n%100), []byte("v"))
				var se *client.StatusError
				switch {
				case err == nil:
					a.Add(1)
				case errors.As(err, &se) && se.Code == http.StatusTooManyRequests:
					r.Add(1)
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	return a.Load(), r.Load(), time.Since(start), nil
}
