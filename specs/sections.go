package specs

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/mattn/go-shellwords"
	"go.yaml.in/yaml/v3"
)

// The manifest's sections: dependencies, volumes, resources, layers,
// services and each service's fields and probes.

func (p *parser) dependencies(n *yaml.Node, d *Dependencies) {
	p.mapping(n, "dependencies", map[string]func(k, v *yaml.Node){
		"python": func(k, v *yaml.Node) {
			if s, ok := p.str(v, "dependencies.python"); ok {
				if !pythonRe.MatchString(s) {
					p.errAt(v, "dependencies.python", "%q is not a Python version; expected 3.MINOR such as \"3.10\" (quoted, or YAML reads 3.10 as 3.1)", s)
				}
				d.Python = s
			}
		},
		"pip_requirements": func(k, v *yaml.Node) {
			if s, ok := p.str(v, "dependencies.pip_requirements"); ok {
				if path.IsAbs(s) || strings.HasPrefix(path.Clean(s), "..") {
					p.errAt(v, "dependencies.pip_requirements", "%q is outside the app; expected a path relative to the app folder", s)
				}
				d.PipRequirements = s
			}
		},
	})
}

func (p *parser) volumes(n *yaml.Node) []Volume {
	var out []Volume
	for i, item := range p.sequence(n, "volumes") {
		f := fmt.Sprintf("volumes[%d]", i)
		s, ok := p.str(item, f)
		if !ok {
			continue
		}
		v, err := ParseVolume(s)
		if err != nil {
			p.errAt(item, f, "%v", err)
			continue
		}
		v.Line = item.Line
		for _, prev := range out {
			if prev.Capsule == v.Capsule {
				p.errAt(item, f, "%s is already mounted by an earlier volume; each capsule path may be mounted once", v.Capsule)
			}
		}
		out = append(out, v)
	}
	return out
}

// ParseVolume parses host:capsule[:ro|rw]; both paths must be absolute.
func ParseVolume(s string) (Volume, error) {
	const expect = "expected host:capsule[:ro|rw] with absolute paths, e.g. /opt/tori/state:/data:rw"
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return Volume{}, fmt.Errorf("%q is not a volume; %s", s, expect)
	}
	v := Volume{Host: parts[0], Capsule: parts[1]}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			v.ReadOnly = true
		case "rw":
		default:
			return Volume{}, fmt.Errorf("%q: mode %q is not ro or rw; %s", s, parts[2], expect)
		}
	}
	for _, p := range []struct{ what, path string }{{"host", v.Host}, {"capsule", v.Capsule}} {
		if !path.IsAbs(p.path) {
			return Volume{}, fmt.Errorf("%q: the %s path %q is not absolute; %s", s, p.what, p.path, expect)
		}
	}
	v.Host, v.Capsule = path.Clean(v.Host), path.Clean(v.Capsule)
	for _, reserved := range []string{"/", "/app", "/proc", "/sys", "/dev", "/run/tori"} {
		if v.Capsule == reserved || (reserved != "/" && strings.HasPrefix(v.Capsule, reserved+"/")) {
			return Volume{}, fmt.Errorf("%q: the capsule path %s is reserved by tori-run; choose another such as /data", s, v.Capsule)
		}
	}
	return v, nil
}

func (p *parser) resources(n *yaml.Node, field string) Resources {
	var r Resources
	fields := map[string]func(k, v *yaml.Node){}
	for name, set := range directiveSetters {
		fields[name] = func(k, v *yaml.Node) {
			f := join(field, name)
			if s, ok := p.scalar(v, f); ok {
				if err := set(&r, s); err != nil {
					p.errAt(v, f, "%v", err)
				}
			}
		}
	}
	p.mapping(n, field, fields)
	return r
}

func (p *parser) layers(n *yaml.Node) []string {
	var out []string
	items := p.sequence(n, "layers")
	for i, item := range items {
		f := fmt.Sprintf("layers[%d]", i)
		s, ok := p.str(item, f)
		if !ok {
			continue
		}
		switch {
		case s == LayerHost:
			if i != len(items)-1 {
				p.errAt(item, f, "host must be the last (bottom) layer; layers are listed top first")
			}
		case digestRe.MatchString(s):
			s = strings.TrimPrefix(s, "sha256:")
		default:
			p.errAt(item, f, "%q is not a layer; expected host or the sha256 digest (64 hex digits) of an installed rootfs layer", s)
			continue
		}
		for _, prev := range out {
			if prev == s {
				p.errAt(item, f, "layer %s is listed twice", s)
			}
		}
		out = append(out, s)
	}
	if n.Kind == yaml.SequenceNode && len(items) == 0 {
		p.errAt(n, "layers", "empty; expected at least one layer, e.g. [host]")
	}
	return out
}

func (p *parser) services(n *yaml.Node) []Service {
	var out []Service
	add := func(nameNode *yaml.Node, name string) *Service {
		f := "services." + name
		if !nameRe.MatchString(name) {
			p.errAt(nameNode, f, "%q is not a valid service name; expected lower-case letters, digits and '-', at most 63 characters", name)
		}
		for _, s := range out {
			if s.Name == name {
				p.errAt(nameNode, f, "service %q is defined twice", name)
			}
		}
		out = append(out, newService(name))
		return &out[len(out)-1]
	}
	switch n.Kind {
	case yaml.SequenceNode:
		for i, item := range n.Content {
			if name, ok := p.str(item, fmt.Sprintf("services[%d]", i)); ok {
				add(item, name)
			}
		}
	case yaml.MappingNode:
		p.mappingAny(n, "services", func(k, v *yaml.Node) {
			s := add(k, k.Value)
			p.service(v, s)
		})
	default:
		p.errAt(n, "services", "expected a list of service names or a map of services, got %s", describe(n))
		return nil
	}
	if len(out) == 0 {
		p.errAt(n, "services", "no services; a capsule runs at least one")
	}
	return out
}

func newService(name string) Service {
	return Service{
		Name:          name,
		Restart:       DefaultRestart,
		Backoff:       Backoff{Initial: DefaultBackoffInit, Max: DefaultBackoffMax, ResetAfter: DefaultResetAfter},
		MaxRestarts:   DefaultMaxRestarts,
		RestartWindow: DefaultRestartWindow,
		StopSignal:    Signal{Name: "SIGTERM", Num: 15},
		StopTimeout:   DefaultStopTimeout,
	}
}

func (p *parser) service(n *yaml.Node, s *Service) {
	f := "services." + s.Name
	var backoffNode *yaml.Node
	p.mapping(n, f, map[string]func(k, v *yaml.Node){
		"command": func(k, v *yaml.Node) {
			if c, ok := p.str(v, f+".command"); ok {
				argv, msg := splitCommand(c)
				if msg != "" {
					p.errAt(v, f+".command", "%s", msg)
				}
				s.Command = argv
			}
		},
		"env": func(k, v *yaml.Node) { s.Env = p.env(v, f+".env") },
		"restart": func(k, v *yaml.Node) {
			if r, ok := p.str(v, f+".restart"); ok {
				switch RestartPolicy(r) {
				case RestartAlways, RestartOnFailure, RestartNever:
					s.Restart = RestartPolicy(r)
				default:
					p.errAt(v, f+".restart", "%q is not a restart policy; expected always, on-failure or never", r)
				}
			}
		},
		"backoff": func(k, v *yaml.Node) {
			backoffNode = v
			p.mapping(v, f+".backoff", map[string]func(k, v *yaml.Node){
				"initial":     func(k, v *yaml.Node) { p.duration(v, f+".backoff.initial", &s.Backoff.Initial) },
				"max":         func(k, v *yaml.Node) { p.duration(v, f+".backoff.max", &s.Backoff.Max) },
				"reset_after": func(k, v *yaml.Node) { p.duration(v, f+".backoff.reset_after", &s.Backoff.ResetAfter) },
			})
		},
		"max_restarts":   func(k, v *yaml.Node) { s.MaxRestarts, _ = p.integer(v, f+".max_restarts", 0, 1_000_000) },
		"restart_window": func(k, v *yaml.Node) { p.duration(v, f+".restart_window", &s.RestartWindow) },
		"stop_signal": func(k, v *yaml.Node) {
			if name, ok := p.str(v, f+".stop_signal"); ok {
				sig, err := ParseSignal(name)
				if err != nil {
					p.errAt(v, f+".stop_signal", "%v", err)
				}
				s.StopSignal = sig
			}
		},
		"stop_timeout": func(k, v *yaml.Node) { p.duration(v, f+".stop_timeout", &s.StopTimeout) },
		"after": func(k, v *yaml.Node) {
			if p.afterNodes == nil {
				p.afterNodes = map[string]*yaml.Node{}
			}
			p.afterNodes[s.Name] = v
			s.After = p.stringList(v, f+".after")
		},
		"ready":     func(k, v *yaml.Node) { s.Ready = p.probe(v, f+".ready", true) },
		"health":    func(k, v *yaml.Node) { s.Health = p.probe(v, f+".health", false) },
		"resources": func(k, v *yaml.Node) { s.Resources = p.resources(v, f+".resources") },
	})
	if backoffNode != nil && s.Backoff.Max < s.Backoff.Initial {
		p.errAt(backoffNode, f+".backoff.max", "%s is less than initial %s; expected max >= initial", s.Backoff.Max, s.Backoff.Initial)
	}
}

func (p *parser) probe(n *yaml.Node, f string, ready bool) *Probe {
	pr := &Probe{Interval: 1e9, Timeout: 1e9, Retries: 30}
	if !ready {
		pr.Interval, pr.Timeout, pr.Retries, pr.OnFailure = 10e9, 2e9, 3, "restart"
	}
	kinds := 0
	fields := map[string]func(k, v *yaml.Node){
		"exec": func(k, v *yaml.Node) {
			kinds++
			if c, ok := p.str(v, f+".exec"); ok {
				argv, msg := splitCommand(c)
				if msg != "" {
					p.errAt(v, f+".exec", "%s", msg)
				}
				pr.Exec = argv
			}
		},
		"http": func(k, v *yaml.Node) {
			kinds++
			if s, ok := p.str(v, f+".http"); ok {
				u, err := url.Parse(s)
				if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					p.errAt(v, f+".http", "%q is not an HTTP URL; expected e.g. http://127.0.0.1:8080/ready", s)
				}
				pr.HTTP = s
			}
		},
		"tcp": func(k, v *yaml.Node) {
			kinds++
			if s, ok := p.str(v, f+".tcp"); ok {
				if _, port, err := net.SplitHostPort(s); err != nil || port == "" {
					p.errAt(v, f+".tcp", "%q is not an address; expected host:port such as 127.0.0.1:8080", s)
				} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
					p.errAt(v, f+".tcp", "%q: port %q is not a number from 1 to 65535", s, port)
				}
				pr.TCP = s
			}
		},
		"interval": func(k, v *yaml.Node) { p.duration(v, f+".interval", &pr.Interval) },
		"timeout":  func(k, v *yaml.Node) { p.duration(v, f+".timeout", &pr.Timeout) },
		"retries":  func(k, v *yaml.Node) { pr.Retries, _ = p.integer(v, f+".retries", 1, 1_000_000) },
	}
	if ready {
		fields["notify"] = func(k, v *yaml.Node) {
			if b, ok := p.boolean(v, f+".notify"); ok && b {
				kinds++
				pr.Notify = true
			}
		}
	} else {
		fields["on_failure"] = func(k, v *yaml.Node) {
			if s, ok := p.str(v, f+".on_failure"); ok {
				if s != "restart" && s != "ignore" {
					p.errAt(v, f+".on_failure", "%q is not an action; expected restart or ignore", s)
				}
				pr.OnFailure = s
			}
		}
	}
	p.mapping(n, f, fields)
	if n.Kind == yaml.MappingNode && kinds != 1 {
		what := "exec, http or tcp"
		if ready {
			what = "exec, http, tcp or notify: true"
		}
		p.errAt(n, f, "expected exactly one of %s, got %d", what, kinds)
	}
	if pr.Interval == 0 {
		p.errAt(n, f+".interval", "0; expected a positive interval")
	}
	return pr
}

// splitCommand splits a command line into argv with shell-word rules,
// without a shell: no variables, no substitutions, no operators.
func splitCommand(s string) ([]string, string) {
	sp := shellwords.NewParser()
	sp.ParseEnv, sp.ParseBacktick = false, false
	argv, err := sp.Parse(s)
	if err != nil {
		return nil, fmt.Sprintf("%q cannot be split into words (%v); check its quotes", s, err)
	}
	if sp.Position >= 0 && sp.Position < len(s) {
		return nil, fmt.Sprintf("%q contains the shell operator %q; no shell runs commands, so write the command as [\"sh\", \"-c\", ...] by hand: sh -c '...'", s, s[sp.Position:sp.Position+1])
	}
	if len(argv) == 0 {
		return nil, "empty command; expected a program and its arguments"
	}
	return argv, ""
}

func checkUser(s string) string {
	name, group, hasGroup := strings.Cut(s, ":")
	if _, err := strconv.ParseUint(name, 10, 32); err != nil && !userRe.MatchString(name) {
		return fmt.Sprintf("%q is not a user; expected a user name, a uid, or uid:gid", s)
	}
	if hasGroup {
		if _, err := strconv.ParseUint(group, 10, 32); err != nil {
			return fmt.Sprintf("%q: group %q is not a numeric gid; expected uid:gid such as 1000:1000", s, group)
		}
	}
	return ""
}
