package supervisor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Prober runs exec, http and tcp probes for the supervisor (notify is the
// supervisor's own). The runtime implements it to run a probe where the
// service lives: an exec probe inside the capsule, http and tcp in the
// capsule's network namespace; HostProber runs them all on the host. ctx
// carries the probe's timeout. A nil error passes.
type Prober interface {
	Probe(ctx context.Context, service string, p *Probe) error
}

// HostProber runs probes from this process: exec as a child in its own
// process group (killed as a group at the timeout), http as a GET that
// passes on 2xx or 3xx (redirects are not followed), tcp as a connect.
type HostProber struct {
	// Client is the HTTP client (default: one that follows no redirect and
	// keeps no idle connection, so a probe leaves nothing behind).
	Client *http.Client
}

var defaultProbeClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

// Probe runs p.
func (h HostProber) Probe(ctx context.Context, _ string, p *Probe) error {
	switch p.Kind {
	case ProbeExec:
		return execProbe(ctx, p.Exec)
	case ProbeHTTP:
		c := h.Client
		if c == nil {
			c = defaultProbeClient
		}
		return httpProbe(ctx, c, p.URL)
	case ProbeTCP:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", p.Addr)
		if err != nil {
			return err
		}
		return conn.Close()
	}
	return fmt.Errorf("HostProber cannot run a %q probe", p.Kind)
}

func execProbe(ctx context.Context, argv []string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// At the timeout, kill the probe's whole group, not only its shell.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A background child that keeps the output pipe open cannot hang Wait.
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout = &limitedBuffer{b: &out, n: 512}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(out.String()); msg != "" {
			return fmt.Errorf("%s: %w: %s", argv[0], err, msg)
		}
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	return nil
}

func httpProbe(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// limitedBuffer keeps the first n bytes written and discards the rest.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
