// Command kubeschema writes kubeconform's schemas from a Kubernetes
// OpenAPI v2 document (api/openapi-spec/swagger.json of the k8s.io/kubernetes
// module), so that the manifests can be validated where kubeconform's own
// schema download (from the internet) is out of reach. It does what the
// openapi2jsonschema script kubeconform ships does with --kubernetes
// --stand-alone --strict: one file per kind and version, named as
// kubeconform's {{.ResourceKind}}{{.KindSuffix}}.json template expects,
// every $ref inlined, additionalProperties false on every object that lists
// its properties (kubectl's own strictness), optional fields nullable (a
// YAML key with no value), and IntOrString and Quantity taking a string or
// a number, as the API server does.
//
//	kubeschema -swagger swagger.json -out DIR
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kubeschema:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("kubeschema", flag.ContinueOnError)
	swagger := fs.String("swagger", "", "the Kubernetes OpenAPI v2 document (swagger.json)")
	out := fs.String("out", "", "the directory to write the schemas to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *swagger == "" || *out == "" {
		return errors.New("-swagger and -out are required")
	}
	raw, err := os.ReadFile(*swagger)
	if err != nil {
		return err
	}
	files, err := schemas(raw)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if err := os.WriteFile(filepath.Join(*out, name), files[name], 0o644); err != nil {
			return err
		}
	}
	return nil
}

type gvk struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

// fileName is kubeconform's name for a kind's schema: the kind in lower
// case, the first label of its group, and its version.
func (k gvk) fileName() string {
	suffix := "-" + strings.ToLower(k.Version)
	if k.Group != "" {
		suffix = "-" + strings.ToLower(strings.Split(k.Group, ".")[0]) + suffix
	}
	return strings.ToLower(k.Kind) + suffix + ".json"
}

func (k gvk) apiVersion() string {
	if k.Group == "" {
		return k.Version
	}
	return k.Group + "/" + k.Version
}

// schemas is every kind's standalone strict schema by file name.
func schemas(swagger []byte) (map[string][]byte, error) {
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(swagger, &doc); err != nil {
		return nil, fmt.Errorf("decode swagger: %w", err)
	}
	defs := doc.Definitions
	if len(defs) == 0 {
		return nil, errors.New("no definitions in the document")
	}
	// The API server takes either for these, and so does every tool that
	// writes manifests; the document says string.
	defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
	out := map[string][]byte{}
	for _, name := range slices.Sorted(maps.Keys(defs)) {
		def := defs[name]
		raw, ok := def["x-kubernetes-group-version-kind"]
		if !ok {
			continue
		}
		b, _ := json.Marshal(raw)
		var kinds []gvk
		if err := json.Unmarshal(b, &kinds); err != nil {
			return nil, fmt.Errorf("%s: x-kubernetes-group-version-kind: %w", name, err)
		}
		for _, k := range kinds {
			s, err := expand(defs, def, map[string]bool{name: true})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			obj := s.(map[string]any)
			if props, ok := obj["properties"].(map[string]any); ok {
				// Each file is one kind's: its apiVersion and kind are
				// fixed, as kubeconform's own schemas have them.
				for key, val := range map[string]string{"apiVersion": k.apiVersion(), "kind": k.Kind} {
					if p, ok := props[key].(map[string]any); ok {
						p["enum"] = []any{val}
					}
				}
			}
			enc, err := json.MarshalIndent(obj, "", "  ")
			if err != nil {
				return nil, err
			}
			// Two definitions of one kind and version (a deprecated
			// alias) would write one file: the first, in sorted order.
			if _, dup := out[k.fileName()]; !dup {
				out[k.fileName()] = enc
			}
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no definition names a kind")
	}
	return out, nil
}

// expand is v with every $ref inlined and the strict and nullable rules
// applied. A definition that refers to itself through its own fields (the
// CRD's JSONSchemaProps) is cut there to an unchecked value, as a
// standalone schema cannot hold the cycle.
func expand(defs map[string]map[string]any, v any, stack map[string]bool) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		if ref, ok := v["$ref"].(string); ok {
			name, ok := strings.CutPrefix(ref, "#/definitions/")
			if !ok {
				return nil, fmt.Errorf("unsupported $ref %q", ref)
			}
			def, ok := defs[name]
			if !ok {
				return nil, fmt.Errorf("$ref to a missing definition %q", name)
			}
			if stack[name] {
				return map[string]any{}, nil
			}
			stack[name] = true
			defer delete(stack, name)
			inner, err := expand(defs, def, stack)
			if err != nil {
				return nil, err
			}
			// Keep what sits beside the $ref (a description).
			m := maps.Clone(inner.(map[string]any))
			for k, x := range v {
				if k != "$ref" {
					if _, set := m[k]; !set {
						m[k] = x
					}
				}
			}
			return m, nil
		}
		out := make(map[string]any, len(v)+1)
		for k, x := range v {
			if strings.HasPrefix(k, "x-kubernetes-") && k != "x-kubernetes-preserve-unknown-fields" {
				continue // annotations, not constraints
			}
			e, err := expand(defs, x, stack)
			if err != nil {
				return nil, err
			}
			out[k] = e
		}
		if props, ok := out["properties"].(map[string]any); ok {
			if _, set := out["additionalProperties"]; !set && out["x-kubernetes-preserve-unknown-fields"] != true {
				out["additionalProperties"] = false
			}
			required := map[string]bool{}
			if r, ok := out["required"].([]any); ok {
				for _, x := range r {
					if s, ok := x.(string); ok {
						required[s] = true
					}
				}
			}
			for name, p := range props {
				if pm, ok := p.(map[string]any); ok && !required[name] {
					if t, ok := pm["type"].(string); ok && t != "null" {
						pm["type"] = []any{t, "null"}
					}
				}
			}
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			e, err := expand(defs, x, stack)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	default:
		return v, nil
	}
}
