package specs

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults of the update: block (Nomad's update stanza has the same two
// fields; its defaults are 10s and 5m as well).
const (
	DefaultMinHealthyTime  = 10 * time.Second
	DefaultHealthyDeadline = 5 * time.Minute
)

// Socket networks.
const (
	SocketTCP  = "tcp"
	SocketTCP6 = "tcp6"
	SocketUnix = "unix"
)

// Socket is a listening socket tori-run opens once for the capsule and
// passes to its services the systemd way (LISTEN_FDS).
type Socket struct {
	// Name is the key in sockets:, passed in LISTEN_FDNAMES.
	Name string `json:"name"`
	// Network is tcp, tcp6 or unix.
	Network string `json:"network"`
	// Address is host:port for tcp and tcp6, the socket's path inside the
	// capsule for unix.
	Address string `json:"address"`
	// Services that receive it; empty means every service.
	Services []string `json:"services,omitempty"`
}

// For reports whether service receives the socket.
func (s *Socket) For(service string) bool {
	if len(s.Services) == 0 {
		return true
	}
	for _, n := range s.Services {
		if n == service {
			return true
		}
	}
	return false
}

// Listen is the socket's address in the manifest's syntax.
func (s *Socket) Listen() string {
	if s.Network == SocketUnix {
		return "unix://" + s.Address
	}
	return s.Network + "://" + s.Address
}

// Update is the blue-green policy read from the new release.
type Update struct {
	// MinHealthyTime: every service ready, then healthy this long, before
	// the old release is stopped.
	MinHealthyTime time.Duration `json:"min_healthy_time"`
	// HealthyDeadline bounds the whole wait, from the new release's start.
	HealthyDeadline time.Duration `json:"healthy_deadline"`
}

// DefaultUpdate is the policy of a manifest without update:.
func DefaultUpdate() Update {
	return Update{MinHealthyTime: DefaultMinHealthyTime, HealthyDeadline: DefaultHealthyDeadline}
}

var socketNameRe = lazyRE(`^[A-Za-z0-9_.-]{1,255}$`)

// ParseListen parses tcp://host:port, tcp6://[::1]:port or unix:///path.
func ParseListen(s string) (network, address string, err error) {
	const expect = "expected tcp://HOST:PORT, tcp6://[ADDR]:PORT or unix:///ABSOLUTE/PATH"
	u, perr := url.Parse(s)
	if perr != nil || u.Scheme == "" {
		return "", "", fmt.Errorf("%q is not a socket address; %s", s, expect)
	}
	switch u.Scheme {
	case SocketTCP, SocketTCP6:
		if u.Path != "" || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
			return "", "", fmt.Errorf("%q: a %s address has no path, query or user; %s", s, u.Scheme, expect)
		}
		host, port, err := net.SplitHostPort(u.Host)
		if err != nil {
			return "", "", fmt.Errorf("%q: %v; %s", s, err, expect)
		}
		n, err := strconv.Atoi(port)
		if err != nil || n < 0 || n > 65535 {
			return "", "", fmt.Errorf("%q: port %q is not a number from 0 to 65535", s, port)
		}
		if host != "" {
			ip := net.ParseIP(host)
			if ip == nil && host != "localhost" {
				return "", "", fmt.Errorf("%q: host %q is not an IP address; %s (names are not resolved)", s, host, expect)
			}
			if ip != nil && u.Scheme == SocketTCP6 && ip.To4() != nil {
				return "", "", fmt.Errorf("%q: %s is an IPv4 address; use tcp:// for it", s, host)
			}
			if ip != nil && u.Scheme == SocketTCP && ip.To4() == nil {
				return "", "", fmt.Errorf("%q: %s is an IPv6 address; use tcp6://[%s]:%s", s, host, host, port)
			}
		}
		return u.Scheme, net.JoinHostPort(host, port), nil
	case SocketUnix:
		p := u.Path
		if u.Host != "" || !path.IsAbs(p) {
			return "", "", fmt.Errorf("%q: a unix socket needs an absolute path after unix://, e.g. unix:///run/web.sock", s)
		}
		if path.Clean(p) != p || strings.HasSuffix(p, "/") {
			return "", "", fmt.Errorf("%q: the path is not clean; expected e.g. unix:///run/web.sock", s)
		}
		if len(p) > 100 {
			return "", "", fmt.Errorf("%q: the path is longer than 100 bytes (a socket address holds 108)", s)
		}
		for _, reserved := range []string{"/app", "/proc", "/sys", "/dev", "/run/tori", "/.tori"} {
			if p == reserved || strings.HasPrefix(p, reserved+"/") {
				return "", "", fmt.Errorf("%q: %s is reserved by tori-run; choose a path such as /run/NAME.sock", s, reserved)
			}
		}
		return SocketUnix, p, nil
	}
	return "", "", fmt.Errorf("%q: scheme %q is not a socket network; %s", s, u.Scheme, expect)
}

// sockets parses the sockets: mapping; which services exist is checked by
// checkSockets once services: is read.
func (p *parser) sockets(n *yaml.Node) []Socket {
	var out []Socket
	p.socketNodes = map[string]*yaml.Node{}
	p.mappingAny(n, "sockets", func(k, v *yaml.Node) {
		f := "sockets." + k.Value
		if !socketNameRe.MatchString(k.Value) || k.Value == "stored" || k.Value == "unknown" || k.Value == "connection" {
			p.errAt(k, f, "%q is not a socket name; expected letters, digits, '_', '.', '-' (at most 255), not stored, unknown or connection (LISTEN_FDNAMES reserves them)", k.Value)
		}
		s := Socket{Name: k.Value}
		var listenNode *yaml.Node
		p.mapping(v, f, map[string]func(k, v *yaml.Node){
			"listen": func(_, v *yaml.Node) {
				listenNode = v
				if str, ok := p.str(v, f+".listen"); ok {
					network, addr, err := ParseListen(str)
					if err != nil {
						p.errAt(v, f+".listen", "%v", err)
						return
					}
					s.Network, s.Address = network, addr
				}
			},
			"service": func(_, v *yaml.Node) {
				p.socketNodes[s.Name] = v
				if v.Kind == yaml.SequenceNode {
					s.Services = p.stringList(v, f+".service")
				} else if str, ok := p.str(v, f+".service"); ok {
					s.Services = []string{str}
				}
			},
		})
		if v.Kind == yaml.MappingNode && listenNode == nil {
			p.errAt(v, f+".listen", "missing; expected e.g. listen: tcp://127.0.0.1:8080")
		}
		if s.Network != "" {
			for _, prev := range out {
				if prev.Network == s.Network && prev.Address == s.Address {
					p.errAt(listenNode, f+".listen", "%s is already declared by socket %q; each address may be listened on once", s.Listen(), prev.Name)
				}
			}
		}
		out = append(out, s)
	})
	return out
}

// checkSockets checks that each socket's services exist.
func (p *parser) checkSockets(m *Manifest, socketsNode *yaml.Node) {
	names := map[string]bool{}
	for _, s := range m.Services {
		names[s.Name] = true
	}
	for _, s := range m.Sockets {
		for _, svc := range s.Services {
			if !names[svc] {
				at := p.socketNodes[s.Name]
				if at == nil {
					at = socketsNode
				}
				p.errAt(at, "sockets."+s.Name+".service", "names %q, which is not a service of this capsule; expected one of %s", svc, strings.Join(sortedKeys(names), ", "))
			}
		}
	}
}

func (p *parser) update(n *yaml.Node) Update {
	u := DefaultUpdate()
	p.mapping(n, "update", map[string]func(k, v *yaml.Node){
		"min_healthy_time": func(_, v *yaml.Node) { p.duration(v, "update.min_healthy_time", &u.MinHealthyTime) },
		"healthy_deadline": func(_, v *yaml.Node) { p.duration(v, "update.healthy_deadline", &u.HealthyDeadline) },
	})
	if u.HealthyDeadline <= u.MinHealthyTime {
		p.errAt(n, "update.healthy_deadline", "%s is not longer than min_healthy_time %s; expected a deadline that leaves time to get ready", u.HealthyDeadline, u.MinHealthyTime)
	}
	return u
}
