// Package ops owns what every role serves for operators: the process's one
// Prometheus registry, liveness and readiness with their checks, and the
// /metrics, /healthz and /readyz handlers.
package ops

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns the process's registry with the Go and process
// collectors, which every role exports.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Check is one readiness condition: nil when ready.
type Check func(ctx context.Context) error

// Health holds the readiness checks and informational details of a process.
type Health struct {
	mu      sync.RWMutex
	checks  map[string]Check
	details map[string]func() string
}

// NewHealth returns an empty Health: ready until a check says otherwise.
func NewHealth() *Health {
	return &Health{checks: map[string]Check{}, details: map[string]func() string{}}
}

// AddCheck registers a condition that must hold for the process to be ready.
func (h *Health) AddCheck(name string, c Check) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks[name] = c
}

// AddDetail registers a status line that /readyz shows without affecting
// readiness, such as "no champion model yet for BTC/USD".
func (h *Health) AddDetail(name string, d func() string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.details[name] = d
}

// Report is the body of /readyz.
type Report struct {
	Ready   bool              `json:"ready"`
	Checks  map[string]string `json:"checks"`
	Details map[string]string `json:"details,omitempty"`
}

// Evaluate runs every check, each with its own short timeout.
func (h *Health) Evaluate(ctx context.Context) Report {
	h.mu.RLock()
	names := make([]string, 0, len(h.checks))
	for n := range h.checks {
		names = append(names, n)
	}
	checks := make(map[string]Check, len(h.checks))
	for n, c := range h.checks {
		checks[n] = c
	}
	details := make(map[string]string, len(h.details))
	for n, d := range h.details {
		if s := d(); s != "" {
			details[n] = s
		}
	}
	h.mu.RUnlock()
	sort.Strings(names)
	r := Report{Ready: true, Checks: make(map[string]string, len(names)), Details: details}
	for _, n := range names {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := checks[n](cctx)
		cancel()
		if err != nil {
			r.Ready = false
			r.Checks[n] = err.Error()
		} else {
			r.Checks[n] = "ok"
		}
	}
	return r
}

// Register mounts /metrics, /healthz and /readyz on mux.
func Register(mux *http.ServeMux, reg *prometheus.Registry, h *Health) {
	RegisterMetrics(mux, reg)
	RegisterHealth(mux, h)
}

// RegisterMetrics mounts /metrics alone, for a listener of its own.
func RegisterMetrics(mux *http.ServeMux, reg *prometheus.Registry) {
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
}

// RegisterHealth mounts /healthz and /readyz.
func RegisterHealth(mux *http.ServeMux, h *Health) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		rep := h.Evaluate(r.Context())
		w.Header().Set("Content-Type", "application/json")
		if !rep.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(rep)
	})
}
