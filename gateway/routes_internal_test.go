package gateway

import (
	"encoding/json"
	"strings"
	"testing"
)

// Every API route the gateway serves is in the OpenAPI document, and the
// document names no route the gateway does not serve.
func TestRoutesAreDocumented(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(openapiDoc, &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	g := &Gateway{}
	served := map[string]bool{}
	for _, r := range g.routes() {
		method, path, ok := strings.Cut(r.pattern, " ")
		// The dashboard, CORS preflight and the JSON 404 are not API.
		if !ok || path == "/" || path == "/{$}" || path == "/static/" || method == "OPTIONS" {
			continue
		}
		served[r.pattern] = true
		if !documented[r.pattern] {
			t.Errorf("%s is served but not documented", r.pattern)
		}
	}
	for k := range documented {
		if !served[k] {
			t.Errorf("%s is documented but not served", k)
		}
	}
}
