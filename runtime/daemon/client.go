//go:build linux

package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tori-run/tori-run/runtime"
)

// Client talks to a running daemon over its control socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client of the daemon at socket.
func NewClient(socket string) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://tori"+path+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the daemon does not answer at %s (is tori-run daemon running? are you root?): %w", c.socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e struct{ Error string }
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
		return nil, fmt.Errorf("daemon: %s", e.Error)
	}
	return resp, nil
}

// Status returns every capsule's status, or one's.
func (c *Client) Status(ctx context.Context, name string) ([]CapsuleStatus, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/status", url.Values{"capsule": {name}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out []CapsuleStatus
	return out, json.NewDecoder(resp.Body).Decode(&out)
}

// Act starts, stops or restarts NAME or NAME/SERVICE.
func (c *Client) Act(ctx context.Context, action, target string) error {
	resp, err := c.do(ctx, http.MethodPost, "/v1/"+action, url.Values{"target": {target}})
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// Events passes every event to fn until ctx ends or fn fails.
func (c *Client) Events(ctx context.Context, fn func(Event) error) error {
	resp, err := c.do(ctx, http.MethodGet, "/v1/events", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeLines(resp.Body, fn)
}

// Logs passes target's log records to fn (see runtime.ReadCapsuleLogs).
func (c *Client) Logs(ctx context.Context, target string, o runtime.LogOptions, fn func(runtime.LogLine) error) error {
	q := url.Values{"target": {target}, "tail": {strconv.Itoa(o.Tail)}}
	if !o.Since.IsZero() {
		q.Set("since", o.Since.Format(time.RFC3339Nano))
	}
	if o.Follow {
		q.Set("follow", "1")
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/logs", q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decodeLines(resp.Body, fn)
}

func decodeLines[T any](r io.Reader, fn func(T) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return err
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Upgrade asks the daemon to switch capsule name to release ref (an
// installed digest or name) blue-green, or, with kind KindRollback, back to
// its previous stable release (ref unused). fn gets each progress line;
// the verdict is returned (OK when the new release serves).
func (c *Client) Upgrade(ctx context.Context, name, ref, kind string, fn func(UpgradeProgress)) (UpgradeProgress, error) {
	var verdict UpgradeProgress
	resp, err := c.do(ctx, http.MethodPost, "/v1/upgrade", url.Values{"capsule": {name}, "release": {ref}, "kind": {kind}})
	if err != nil {
		return verdict, err
	}
	defer resp.Body.Close()
	err = decodeLines(resp.Body, func(p UpgradeProgress) error {
		if p.Verdict {
			verdict = p
			return nil
		}
		fn(p)
		return nil
	})
	if err == nil && !verdict.Verdict {
		err = fmt.Errorf("the daemon ended the %s of %s without a verdict (did it stop?); tori-run status %s shows where it stands", kind, name, name)
	}
	return verdict, err
}
