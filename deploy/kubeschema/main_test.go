package main

import (
	"encoding/json"
	"testing"
)

// The conversion on a two-definition document: the kind's file is named
// as kubeconform looks it up, its $ref is inlined, unknown fields are
// refused, optional fields may be null, the required one may not, and a
// definition that refers to itself is cut rather than looping.
func TestSchemas(t *testing.T) {
	doc := `{"definitions": {
	  "io.k8s.api.apps.v1.Widget": {
	    "x-kubernetes-group-version-kind": [{"group": "apps", "version": "v1", "kind": "Widget"}],
	    "required": ["spec"],
	    "properties": {
	      "apiVersion": {"type": "string"},
	      "kind": {"type": "string"},
	      "spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.WidgetSpec"}
	    }
	  },
	  "io.k8s.api.apps.v1.WidgetSpec": {
	    "type": "object",
	    "properties": {
	      "replicas": {"type": "integer"},
	      "port": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"},
	      "child": {"$ref": "#/definitions/io.k8s.api.apps.v1.WidgetSpec"}
	    }
	  },
	  "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"}
	}}`
	files, err := schemas([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	raw, ok := files["widget-apps-v1.json"]
	if len(files) != 1 || !ok {
		t.Fatalf("files %v, want widget-apps-v1.json alone", keys(files))
	}
	var s struct {
		AdditionalProperties *bool `json:"additionalProperties"`
		Properties           struct {
			Kind struct {
				Enum []string `json:"enum"`
			} `json:"kind"`
			APIVersion struct {
				Enum []string `json:"enum"`
			} `json:"apiVersion"`
			Spec struct {
				Type                 any   `json:"type"`
				AdditionalProperties *bool `json:"additionalProperties"`
				Properties           struct {
					Replicas struct {
						Type []string `json:"type"`
					} `json:"replicas"`
					Port struct {
						OneOf []map[string]string `json:"oneOf"`
					} `json:"port"`
					Child map[string]any `json:"child"`
				} `json:"properties"`
			} `json:"spec"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	if s.AdditionalProperties == nil || *s.AdditionalProperties || s.Properties.Spec.AdditionalProperties == nil || *s.Properties.Spec.AdditionalProperties {
		t.Errorf("objects with properties must refuse others:\n%s", raw)
	}
	if len(s.Properties.Kind.Enum) != 1 || s.Properties.Kind.Enum[0] != "Widget" || len(s.Properties.APIVersion.Enum) != 1 || s.Properties.APIVersion.Enum[0] != "apps/v1" {
		t.Errorf("kind %v, apiVersion %v: want Widget and apps/v1", s.Properties.Kind.Enum, s.Properties.APIVersion.Enum)
	}
	if s.Properties.Spec.Type != "object" {
		t.Errorf("required spec has type %v, want object (not nullable)", s.Properties.Spec.Type)
	}
	if r := s.Properties.Spec.Properties.Replicas.Type; len(r) != 2 || r[0] != "integer" || r[1] != "null" {
		t.Errorf("optional replicas has type %v, want [integer null]", r)
	}
	if p := s.Properties.Spec.Properties.Port.OneOf; len(p) != 2 {
		t.Errorf("IntOrString port: %v, want string or integer", p)
	}
	if c := s.Properties.Spec.Properties.Child; len(c) != 0 {
		t.Errorf("the self-reference is %v, want it cut to {}", c)
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
