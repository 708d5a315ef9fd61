package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"cryptostream/gateway/auth"
)

// apiError is the one error shape: {"error": {"code": "...", "message": "..."}}.
type apiError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to do
}

// fail answers with err as an apiError; anything else is a 500 whose cause
// is logged and not shown.
func (g *Gateway) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		switch {
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
			ae = errorf(http.StatusServiceUnavailable, "unavailable", "the backend did not answer in time")
		case backendDown(err):
			ae = errorf(http.StatusServiceUnavailable, "unavailable", "a backend is unreachable; retry later")
		default:
			ae = errorf(http.StatusInternalServerError, "internal", "internal error")
		}
		g.log.Error("request failed", "request_id", requestID(r), "path", r.URL.Path, "err", err)
	}
	switch ae.Status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="cryptostream"`)
	case http.StatusServiceUnavailable:
		if w.Header().Get("Retry-After") == "" {
			w.Header().Set("Retry-After", strconv.Itoa(retryAfterUnavailable))
		}
	}
	writeJSON(w, ae.Status, map[string]*apiError{"error": ae})
}

// retryAfterUnavailable is the Retry-After, in seconds, of a 503: about the
// time a database restart or a NATS reconnect takes.
const retryAfterUnavailable = 5

// backendDown reports an error that says a backend (PostgreSQL, NATS) could
// not be reached, rather than that the request or the code is wrong, so the
// client is told to retry instead of shown a 500. The read models' drivers
// are matched by behaviour (net.Error, SQLSTATE, SafeToRetry) so that this
// package does not import them.
func backendDown(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
		return true
	}
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrDisconnected) {
		return true
	}
	var pg interface{ SQLState() string }
	if errors.As(err, &pg) {
		// 08 connection exception, 57 operator intervention (shutdown,
		// cannot connect now), 53 insufficient resources.
		switch pg.SQLState()[:min(2, len(pg.SQLState()))] {
		case "08", "57", "53":
			return true
		}
	}
	var retry interface{ SafeToRetry() bool }
	return errors.As(err, &retry) && retry.SafeToRetry()
}

// decodeJSON reads a bounded body strictly: one JSON object, no unknown
// fields, nothing after it.
func (g *Gateway) decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json")
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return bodyError(err)
		}
		return errorf(http.StatusBadRequest, "malformed_body", "unexpected data after the JSON object")
	}
	return nil
}

func bodyError(err error) *apiError {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return errorf(http.StatusRequestEntityTooLarge, "body_too_large", "request body exceeds %d bytes", tooBig.Limit)
	}
	if errors.Is(err, io.EOF) {
		return errorf(http.StatusBadRequest, "malformed_body", "empty body")
	}
	return errorf(http.StatusBadRequest, "malformed_body", "%s", strings.TrimPrefix(err.Error(), "json: "))
}

// decodeForm reads a bounded urlencoded form, refusing fields not in allowed.
func (g *Gateway) decodeForm(w http.ResponseWriter, r *http.Request, allowed ...string) (url.Values, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBodyBytes))
	if err != nil {
		return nil, bodyError(err)
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "malformed_body", "bad form encoding")
	}
	for k, v := range vals {
		if !slices.Contains(allowed, k) {
			return nil, errorf(http.StatusBadRequest, "malformed_body", "unknown field %q", k)
		}
		if len(v) != 1 {
			return nil, errorf(http.StatusBadRequest, "malformed_body", "field %q given %d times", k, len(v))
		}
	}
	return vals, nil
}

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyClaims
)

func requestID(r *http.Request) string {
	s, _ := r.Context().Value(keyRequestID).(string)
	return s
}

func claimsOf(r *http.Request) auth.Claims {
	c, _ := r.Context().Value(keyClaims).(auth.Claims)
	return c
}

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	audit    *prometheus.CounterVec
	logins   *prometheus.CounterVec
	// ruleRejects counts alert rules refused, by reason (malformed,
	// invalid, webhook), and stored ones skipped (stored_unreadable).
	ruleRejects *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_gateway_requests_total", Help: "HTTP requests by route and status code."}, []string{"route", "code"}),
		latency: f.NewHistogramVec(prometheus.HistogramOpts{Name: "cryptostream_gateway_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"route"}),
		errors:      f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_gateway_request_errors_total", Help: "HTTP requests answered with an error, by route and error class (client or server)."}, []string{"route", "class"}),
		audit:       f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_gateway_audit_events_total", Help: "Audit events by outcome of their publication (ok or failed)."}, []string{"result"}),
		logins:      f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_gateway_logins_total", Help: "Login attempts by outcome (ok, invalid, rate_limited)."}, []string{"outcome"}),
		ruleRejects: f.NewCounterVec(prometheus.CounterOpts{Name: "cryptostream_gateway_alert_rules_rejected_total", Help: "Alert rules refused, by reason (malformed, invalid, webhook), and stored rules skipped because they do not decode (stored_unreadable)."}, []string{"reason"}),
	}
}

// recorder remembers the status for the access log and metrics, and still
// lets the websocket upgrade hijack the connection.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += n
	return n, err
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := r.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("gateway: connection cannot be hijacked")
	}
	r.status = http.StatusSwitchingProtocols
	return h.Hijack()
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// wrap adds the request id, CORS, the access log and the per-route metrics.
// route is the mux pattern, a bounded label.
func (g *Gateway) wrap(route string, h http.Handler) http.Handler {
	lat := g.m.latency.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 64 || strings.ContainsFunc(id, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
			id = auth.NewID()
		}
		w.Header().Set("X-Request-Id", id)
		g.cors(w, r)
		rec := &recorder{ResponseWriter: w}
		r = r.WithContext(context.WithValue(r.Context(), keyRequestID, id))
		h.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		elapsed := time.Since(start)
		lat.Observe(elapsed.Seconds())
		g.m.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
		switch {
		case rec.status >= 500:
			g.m.errors.WithLabelValues(route, "server").Inc()
		case rec.status >= 400:
			g.m.errors.WithLabelValues(route, "client").Inc()
		}
		lvl := slog.LevelDebug
		if rec.status >= 500 {
			lvl = slog.LevelWarn
		}
		g.log.Log(r.Context(), lvl, "http request", "request_id", id, "method", r.Method, "path", r.URL.Path, "route", route,
			"status", rec.status, "bytes", rec.bytes, "duration", elapsed, "remote", remoteIP(r), "user", claimsOf(r).Subject)
	})
}

func (g *Gateway) cors(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" || len(g.cfg.CORSOrigins) == 0 {
		return
	}
	if !slices.Contains(g.cfg.CORSOrigins, "*") && !slices.Contains(g.cfg.CORSOrigins, origin) {
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Add("Vary", "Origin")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Expose-Headers", "X-Request-Id, Retry-After")
	h.Set("Access-Control-Max-Age", "600")
}

// remoteIP is the peer's address. X-Forwarded-For is not trusted: anyone can
// set it, and the login limiter keys on this.
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
