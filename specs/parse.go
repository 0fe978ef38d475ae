package specs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
	"go.yaml.in/yaml/v3"
)

// MaxManifestSize bounds what Parse reads; a capsule.yml is a few KiB.
const MaxManifestSize = 1 << 20

// nodeBudget bounds how many YAML nodes a walk visits, so that aliases
// (billion-laughs documents) cannot make validation explode.
const nodeBudget = 100_000

var (
	nameRe   = lazyRE(`^[a-z0-9][a-z0-9-]{0,62}$`)
	envRe    = lazyRE(`^[A-Za-z_][A-Za-z0-9_]*$`)
	digestRe = lazyRE(`^(sha256:)?[0-9a-f]{64}$`)
	pythonRe = lazyRE(`^3\.[0-9]+(\.[0-9]+)?$`)
	userRe   = lazyRE(`^[a-z_][a-z0-9_-]{0,31}$`)
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
var yamlLineRe = lazyRE(`^yaml: (?:line (\d+): )?(.*)$`)

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
