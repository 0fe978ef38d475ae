package specs

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The YAML node helpers: every value of the manifest is read through these,
// which resolve aliases within the node budget, check the kind, and record
// an error with the node's line and column and the field's dotted path.

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
