package messages

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// yamlToJSON converts one YAML document to JSON so that YAML bodies go
// through the same decoders (and so the same rules) as JSON ones.
//
// It walks the node tree instead of decoding into interface values because
// the latter loses literal text: `version: 1.0` would become the float 1
// and be re-encoded as "1". Here an int or float scalar is emitted with its
// literal text when that text is a valid JSON number, so the JSON decoder
// sees 1.0 and can keep "1.0". Scalars that JSON cannot represent as
// numbers (.inf, 0x1F, 1_000) become strings holding their literal text.
func yamlToJSON(b []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty YAML document")
		}
		return nil, fmt.Errorf("malformed YAML: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("malformed YAML: %w", err)
		}
		return nil, errors.New("expected a single YAML document, found several")
	}
	c := &yamlConverter{}
	if err := c.writeNode(&doc, 0); err != nil {
		return nil, err
	}
	return c.out.Bytes(), nil
}

// maxYAMLDepth stops alias cycles and absurd nesting; no wire shape is
// deeper than a handful of levels.
const maxYAMLDepth = 64

// Aliases make a YAML document a compressed one: each level of nested
// aliases multiplies what the previous one expands to, so a few hundred
// bytes can stand for gigabytes ("billion laughs"). The expansion is bounded
// twice: by the number of aliases followed, and by the size of the JSON
// written, so any body up to the size limit converts (or is refused) in
// milliseconds. No job or schedule needs more than a few aliases.
const (
	maxYAMLAliases  = 100
	maxYAMLExpanded = 2 << 20
)

// yamlConverter writes one document as JSON and counts what its aliases
// expand to.
type yamlConverter struct {
	out     bytes.Buffer
	aliases int
}

// errYAMLExpansion is returned once the document expands past the limits.
var errYAMLExpansion = fmt.Errorf("YAML aliases expand too much (more than %d aliases or %d bytes)", maxYAMLAliases, maxYAMLExpanded)

// follow counts one alias followed.
func (c *yamlConverter) follow() error {
	c.aliases++
	if c.aliases > maxYAMLAliases {
		return errYAMLExpansion
	}
	return nil
}

func (c *yamlConverter) writeNode(n *yaml.Node, depth int) error {
	if depth > maxYAMLDepth {
		return errors.New("YAML nested too deeply (or an alias cycle)")
	}
	if c.out.Len() > maxYAMLExpanded {
		return errYAMLExpansion
	}
	w := &c.out
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return errors.New("empty YAML document")
		}
		return c.writeNode(n.Content[0], depth+1)
	case yaml.AliasNode:
		if err := c.follow(); err != nil {
			return err
		}
		return c.writeNode(n.Alias, depth+1)
	case yaml.SequenceNode:
		w.WriteByte('[')
		for i, item := range n.Content {
			if i > 0 {
				w.WriteByte(',')
			}
			if err := c.writeNode(item, depth+1); err != nil {
				return err
			}
		}
		w.WriteByte(']')
		return nil
	case yaml.MappingNode:
		pairs, err := c.mappingPairs(n, depth)
		if err != nil {
			return err
		}
		w.WriteByte('{')
		for i, p := range pairs {
			if i > 0 {
				w.WriteByte(',')
			}
			key, _ := json.Marshal(p.key)
			w.Write(key)
			w.WriteByte(':')
			if err := c.writeNode(p.value, depth+1); err != nil {
				return err
			}
		}
		w.WriteByte('}')
		return nil
	case yaml.ScalarNode:
		return writeScalar(w, n)
	}
	return fmt.Errorf("line %d: unsupported YAML node", n.Line)
}

type yamlPair struct {
	key   string
	value *yaml.Node
}

// mappingPairs lists a mapping's entries in document order, expanding
// merge keys (<<) the way YAML defines them: explicit keys win over merged
// ones. Duplicate explicit keys are an error rather than a silent
// last-one-wins.
func (c *yamlConverter) mappingPairs(n *yaml.Node, depth int) ([]yamlPair, error) {
	var pairs []yamlPair
	index := map[string]int{}
	var merged []yamlPair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			m, err := c.mergeSources(v, depth)
			if err != nil {
				return nil, err
			}
			merged = append(merged, m...)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: mapping keys must be plain scalars", k.Line)
		}
		if _, dup := index[k.Value]; dup {
			return nil, fmt.Errorf("line %d: duplicate key %q", k.Line, k.Value)
		}
		index[k.Value] = len(pairs)
		pairs = append(pairs, yamlPair{key: k.Value, value: v})
	}
	for _, p := range merged {
		if _, ok := index[p.key]; ok {
			continue
		}
		index[p.key] = len(pairs)
		pairs = append(pairs, p)
	}
	return pairs, nil
}

func (c *yamlConverter) mergeSources(v *yaml.Node, depth int) ([]yamlPair, error) {
	if depth > maxYAMLDepth {
		return nil, errors.New("YAML nested too deeply (or an alias cycle)")
	}
	for v.Kind == yaml.AliasNode {
		if err := c.follow(); err != nil {
			return nil, err
		}
		v = v.Alias
	}
	switch v.Kind {
	case yaml.MappingNode:
		return c.mappingPairs(v, depth+1)
	case yaml.SequenceNode:
		// Earlier sources take precedence over later ones.
		var out []yamlPair
		seen := map[string]bool{}
		for _, src := range v.Content {
			ps, err := c.mergeSources(src, depth+1)
			if err != nil {
				return nil, err
			}
			for _, p := range ps {
				if !seen[p.key] {
					seen[p.key] = true
					out = append(out, p)
				}
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("line %d: a merge key (<<) needs a mapping", v.Line)
}

func writeScalar(w *bytes.Buffer, n *yaml.Node) error {
	switch n.ShortTag() {
	case "!!null":
		w.WriteString("null")
		return nil
	case "!!bool":
		var v bool
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		if v {
			w.WriteString("true")
		} else {
			w.WriteString("false")
		}
		return nil
	case "!!int", "!!float":
		if isJSONNumber(n.Value) {
			w.WriteString(n.Value)
			return nil
		}
	}
	s, _ := json.Marshal(n.Value)
	w.Write(s)
	return nil
}

// isJSONNumber reports whether s is exactly a JSON number literal.
func isJSONNumber(s string) bool {
	if s == "" || !json.Valid([]byte(s)) {
		return false
	}
	c := s[0]
	return c == '-' || c >= '0' && c <= '9'
}
