package specs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/mattn/go-shellwords"
	"go.yaml.in/yaml/v3"
)

// MaxManifestSize bounds what Parse reads; a capsule.yml is a few KiB.
const MaxManifestSize = 1 << 20

// nodeBudget bounds how many YAML nodes a walk visits, so that aliases
// (billion-laughs documents) cannot make validation explode.
const nodeBudget = 100_000

var (
	nameRe   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	envRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	digestRe = regexp.MustCompile(`^(sha256:)?[0-9a-f]{64}$`)
	pythonRe = regexp.MustCompile(`^3\.[0-9]+(\.[0-9]+)?$`)
	userRe   = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
)

// reservedEnv are set by tori-run for every service; a manifest may not set
// them.
var reservedEnv = map[string]bool{
	"TORI_CAPSULE": true, "TORI_RELEASE": true, "TORI_BUILD_SHA": true,
	"TORI_SERVICE": true, "TORI_STATE_SOCKET": true, "NOTIFY_SOCKET": true,
	"LISTEN_FDS": true, "LISTEN_FDNAMES": true, "LISTEN_PID": true,
}

// Load reads and validates the manifest at file.
func Load(file string) (*Manifest, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f, file)
}

// Parse reads a manifest from r; name is used in messages. On failure the
// error is an Errors listing every problem found.
func Parse(r io.Reader, name string) (*Manifest, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &parser{file: name}
	if len(data) > MaxManifestSize {
		p.errs = append(p.errs, &FieldError{File: name, Msg: fmt.Sprintf("larger than %d bytes; a manifest is a small YAML file", MaxManifestSize)})
		return nil, p.errs.orNil()
	}
	m := p.parse(data)
	if err := p.errs.orNil(); err != nil {
		return nil, err
	}
	m.Source = name
	return m, nil
}

type parser struct {
	file   string
	errs   Errors
	budget int
	// afterNodes are each service's after: lists, for messages.
	afterNodes map[string]*yaml.Node
	// settings receives tori-run's settings while the top-level env is
	// walked; nil elsewhere.
	settings *Settings
	// socketNodes are each socket's service: node, for messages.
	socketNodes map[string]*yaml.Node
}

func (p *parser) errAt(n *yaml.Node, field, format string, args ...any) {
	e := &FieldError{File: p.file, Field: field, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

// yamlLineRe finds "line N" in yaml.v3's syntax errors.
var yamlLineRe = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

func (p *parser) parse(data []byte) *Manifest {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errAt(nil, "", "empty file; expected a YAML mapping with at least name, version and services")
			return nil
		}
		e := &FieldError{File: p.file, Msg: "not valid YAML: " + err.Error()}
		if m := yamlLineRe.FindStringSubmatch(err.Error()); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = "not valid YAML: " + m[2]
		}
		p.errs = append(p.errs, e)
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errAt(&extra, "", "a second YAML document; a manifest is one document")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	m := &Manifest{Network: NetworkHost, Settings: DefaultSettings(), Update: DefaultUpdate()}
	var servicesNode, nameNode, versionNode, socketsNode *yaml.Node
	p.mapping(root, "", map[string]func(k, v *yaml.Node){
		"name": func(k, v *yaml.Node) {
			nameNode = v
			m.Name, _ = p.str(v, "name")
		},
		"version": func(k, v *yaml.Node) {
			versionNode = v
			m.Version, _ = p.str(v, "version")
		},
		"entrypoint": func(k, v *yaml.Node) {
			var ok bool
			if m.Entrypoint, ok = p.str(v, "entrypoint"); !ok {
				return
			}
			if argv, msg := splitCommand(m.Entrypoint); msg != "" {
				p.errAt(v, "entrypoint", "%s", msg)
			} else if !path.IsAbs(argv[0]) && strings.HasPrefix(path.Clean(argv[0]), "..") {
				p.errAt(v, "entrypoint", "%q leaves the app folder; expected a path inside the app or an absolute path", argv[0])
			}
		},
		"services": func(k, v *yaml.Node) {
			servicesNode = v
			m.Services = p.services(v)
		},
		"env": func(k, v *yaml.Node) {
			p.settings = &m.Settings
			m.Env = p.env(v, "env")
			p.settings = nil
		},
		"dependencies": func(k, v *yaml.Node) { p.dependencies(v, &m.Dependencies) },
		"volumes":      func(k, v *yaml.Node) { m.Volumes = p.volumes(v) },
		"resources":    func(k, v *yaml.Node) { m.Resources = p.resources(v, "resources") },
		"layers":       func(k, v *yaml.Node) { m.Layers = p.layers(v) },
		"read_only":    func(k, v *yaml.Node) { m.ReadOnly, _ = p.boolean(v, "read_only") },
		"network": func(k, v *yaml.Node) {
			if s, ok := p.str(v, "network"); ok {
				switch Network(s) {
				case NetworkHost, NetworkNone:
					m.Network = Network(s)
				default:
					p.errAt(v, "network", "%q is not a network mode; expected host or none", s)
				}
			}
		},
		"seccomp":      func(k, v *yaml.Node) { m.Seccomp = p.seccomp(v) },
		"capabilities": func(k, v *yaml.Node) { m.Capabilities = p.capabilities(v) },
		"sockets": func(k, v *yaml.Node) {
			socketsNode = v
			m.Sockets = p.sockets(v)
		},
		"update": func(k, v *yaml.Node) { m.Update = p.update(v) },
		"user": func(k, v *yaml.Node) {
			if s, ok := p.str(v, "user"); ok {
				if msg := checkUser(s); msg != "" {
					p.errAt(v, "user", "%s", msg)
				}
				m.User = s
			}
		},
	})
	if root.Kind != yaml.MappingNode {
		return m
	}
	p.checkTop(m, root, nameNode, versionNode, servicesNode)
	p.checkSockets(m, socketsNode)
	return m
}

func (p *parser) checkTop(m *Manifest, root, nameNode, versionNode, servicesNode *yaml.Node) {
	switch {
	case nameNode == nil:
		p.errAt(root, "name", "missing; expected a capsule name matching [a-z0-9][a-z0-9-]{0,62}")
	case m.Name != "" && !nameRe.MatchString(m.Name):
		p.errAt(nameNode, "name", "%q is not a valid name; expected lower-case letters, digits and '-', starting with a letter or digit, at most 63 characters", m.Name)
	}
	switch {
	case versionNode == nil:
		p.errAt(root, "version", `missing; expected a semantic version such as "2.1.0"`)
	case versionNode.Kind == yaml.ScalarNode && versionNode.Tag != "!!str":
		// Already reported by str(); say how to fix the common case.
	case m.Version != "":
		if _, err := semver.StrictNewVersion(m.Version); err != nil {
			p.errAt(versionNode, "version", "%q is not a semantic version; expected MAJOR.MINOR.PATCH such as \"2.1.0\" (no leading v)", m.Version)
		}
	}
	if servicesNode == nil {
		p.errAt(root, "services", "missing; expected a list of service names or a map of services")
	}
	if len(m.Layers) == 0 {
		m.Layers = []string{LayerHost}
	}
	// Fill commands and check what links services together.
	entry, _ := splitCommand(m.Entrypoint)
	for i := range m.Services {
		s := &m.Services[i]
		if s.Command == nil {
			if m.Entrypoint == "" {
				p.errAt(servicesNode, "services."+s.Name+".command", "missing; set command for this service or a top-level entrypoint")
			}
			s.Command = entry
		}
	}
	p.checkGraph(m, servicesNode)
}

// resolve follows aliases and charges the node budget.
func (p *parser) resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	p.budget++
	return n
}

// mapping walks a mapping node, calling fields[key] for each key in file
// order and reporting unknown and duplicate keys.
func (p *parser) mapping(n *yaml.Node, field string, fields map[string]func(k, v *yaml.Node)) {
	n = p.resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		if n != nil && n.Kind == yaml.ScalarNode && n.Tag == "!!null" && field != "" {
			return
		}
		p.errAt(n, field, "expected a mapping of %s, got %s", keyList(fields), describe(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := p.resolve(n.Content[i]), n.Content[i+1]
		if p.budget > nodeBudget {
			p.errAt(k, field, "document too large or too deeply aliased")
			return
		}
		key := k.Value
		if k.Kind != yaml.ScalarNode {
			p.errAt(k, field, "keys must be plain strings, got %s", describe(k))
			continue
		}
		if seen[key] {
			p.errAt(k, join(field, key), "duplicate key; each key may appear once")
			continue
		}
		seen[key] = true
		f, ok := fields[key]
		if !ok {
			msg := fmt.Sprintf("unknown field %q; expected one of %s", key, keyList(fields))
			if s := suggest(key, fields); s != "" {
				msg = fmt.Sprintf("unknown field %q; did you mean %q?", key, s)
			}
			p.errAt(k, join(field, key), "%s", msg)
			continue
		}
		f(k, p.resolve(v))
	}
}

func (p *parser) str(n *yaml.Node, field string) (string, bool) {
	n = p.resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		hint := ""
		if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
			hint = fmt.Sprintf(" (quote it: \"%s\")", n.Value)
		}
		p.errAt(n, field, "expected a string, got %s%s", describe(n), hint)
		return "", false
	}
	if n.Value == "" {
		p.errAt(n, field, "empty; expected a value")
		return "", false
	}
	return n.Value, true
}

// scalar accepts a string, number or boolean and returns its text, for
// values such as env entries and resource directives.
func (p *parser) scalar(n *yaml.Node, field string) (string, bool) {
	n = p.resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errAt(n, field, "expected a single value, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) boolean(n *yaml.Node, field string) (bool, bool) {
	n = p.resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		p.errAt(n, field, "expected true or false, got %s", describe(n))
		return false, false
	}
	return n.Value == "true", true
}

func (p *parser) integer(n *yaml.Node, field string, min, max int) (int, bool) {
	n = p.resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!int" {
		if v, err := strconv.Atoi(n.Value); err == nil && v >= min && v <= max {
			return v, true
		}
	}
	p.errAt(n, field, "expected an integer from %d to %d, got %s", min, max, describe(n))
	return 0, false
}

func (p *parser) sequence(n *yaml.Node, field string) []*yaml.Node {
	n = p.resolve(n)
	if n.Kind != yaml.SequenceNode {
		p.errAt(n, field, "expected a list, got %s", describe(n))
		return nil
	}
	return n.Content
}

func (p *parser) stringList(n *yaml.Node, field string) []string {
	var out []string
	for i, item := range p.sequence(n, field) {
		if s, ok := p.str(item, fmt.Sprintf("%s[%d]", field, i)); ok {
			out = append(out, s)
		}
	}
	return out
}

func (p *parser) env(n *yaml.Node, field string) []EnvVar {
	var out []EnvVar
	p.mappingAny(n, field, func(k, v *yaml.Node) {
		f := join(field, k.Value)
		switch {
		case !envRe.MatchString(k.Value):
			p.errAt(k, f, "%q is not a valid variable name; expected letters, digits and _, not starting with a digit", k.Value)
		case reservedEnv[k.Value]:
			p.errAt(k, f, "%s is set by tori-run for every service and cannot be set in a manifest", k.Value)
		}
		val, ok := p.scalar(v, f)
		if !ok {
			return
		}
		out = append(out, EnvVar{Name: k.Value, Value: val})
		// In the capsule-wide env, tori-run's own settings must parse.
		if parse := settingParsers[k.Value]; parse != nil && p.settings != nil {
			if err := parse(p.settings, val); err != nil {
				p.errAt(v, f, "%v", err)
			}
		}
	})
	return out
}

// mappingAny walks a mapping whose keys are free (env, services).
func (p *parser) mappingAny(n *yaml.Node, field string, each func(k, v *yaml.Node)) {
	n = p.resolve(n)
	if n.Kind != yaml.MappingNode {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		p.errAt(n, field, "expected a mapping, got %s", describe(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := p.resolve(n.Content[i]), p.resolve(n.Content[i+1])
		if p.budget > nodeBudget {
			p.errAt(k, field, "document too large or too deeply aliased")
			return
		}
		if k.Kind != yaml.ScalarNode {
			p.errAt(k, field, "keys must be plain strings, got %s", describe(k))
			continue
		}
		if seen[k.Value] {
			p.errAt(k, join(field, k.Value), "duplicate key; each key may appear once")
			continue
		}
		seen[k.Value] = true
		each(k, v)
	}
}

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

func (p *parser) duration(v *yaml.Node, field string, into *durationField) {
	if s, ok := p.scalar(v, field); ok {
		d, err := ParseDuration(s)
		if err != nil {
			p.errAt(v, field, "%v", err)
			return
		}
		*into = durationField(d)
	}
}

type durationField = time.Duration

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

// checkGraph checks that after: names existing services and has no cycle.
func (p *parser) checkGraph(m *Manifest, services *yaml.Node) {
	at := func(name string) *yaml.Node {
		if n := p.afterNodes[name]; n != nil {
			return n
		}
		return services
	}
	names := map[string]bool{}
	for _, s := range m.Services {
		names[s.Name] = true
	}
	for _, s := range m.Services {
		for _, a := range s.After {
			switch {
			case a == s.Name:
				p.errAt(at(s.Name), "services."+s.Name+".after", "a service cannot start after itself")
			case !names[a]:
				p.errAt(at(s.Name), "services."+s.Name+".after", "names %q, which is not a service of this capsule; expected one of %s", a, strings.Join(sortedKeys(names), ", "))
			}
		}
	}
	if cycle := findCycle(m.Services); cycle != nil {
		p.errAt(at(cycle[0]), "services."+cycle[0]+".after", "dependency cycle: %s; expected services ordered without loops", strings.Join(cycle, " -> "))
	}
}

// findCycle returns one cycle of after: edges, as a path that starts and ends
// with the same service, or nil.
func findCycle(services []Service) []string {
	after := map[string][]string{}
	for _, s := range services {
		after[s.Name] = s.After
	}
	const (
		unseen = iota
		onPath
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(string) []string
	visit = func(n string) []string {
		state[n] = onPath
		stack = append(stack, n)
		for _, d := range after[n] {
			if _, ok := after[d]; !ok || d == n {
				continue
			}
			switch state[d] {
			case onPath:
				for i, s := range stack {
					if s == d {
						return append(append([]string{}, stack[i:]...), d)
					}
				}
			case unseen:
				if c := visit(d); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = done
		return nil
	}
	for _, s := range services {
		if state[s.Name] == unseen {
			if c := visit(s.Name); c != nil {
				return c
			}
		}
	}
	return nil
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

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

func describe(n *yaml.Node) string {
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "an empty document"
	}
	switch n.Tag {
	case "!!null":
		return "nothing (null)"
	case "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	case "!!int":
		return "the number " + n.Value
	case "!!float":
		return "the number " + n.Value
	case "!!bool":
		return "the boolean " + n.Value
	}
	return fmt.Sprintf("%q", n.Value)
}

func keyList(fields map[string]func(k, v *yaml.Node)) string {
	return strings.Join(slices.Sorted(maps.Keys(fields)), ", ")
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// suggest returns the known key closest to key when it is a likely typo.
func suggest(key string, fields map[string]func(k, v *yaml.Node)) string {
	best, bestD := "", 3
	for k := range fields {
		if d := editDistance(strings.ToLower(key), strings.ToLower(k)); d < bestD || (d == bestD && k < best && best != "") {
			best, bestD = k, d
		}
	}
	if bestD > 2 {
		return ""
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
