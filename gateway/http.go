package gateway

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
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
	"sync"
	"sync/atomic"
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

// contentTypeJSON is shared by every answer: set as the header's value it
// saves a slice and a canonicalisation per answer (the server only reads
// it, and an Add would copy it, its capacity being its length).
var contentTypeJSON = []string{"application/json"}

// writeBody writes an answer already encoded as JSON.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header()["Content-Type"] = contentTypeJSON
	w.WriteHeader(status)
	_, _ = w.Write(body) // the client went away; nothing to do
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

const keyRequest ctxKey = 0

// requestInfo is what the middleware learns about a request: put in its
// context once by wrap (one copy of the request, not one per layer) and
// filled in by authed, so that the access log names the user too.
type requestInfo struct {
	id     string
	claims auth.Claims
}

func infoOf(r *http.Request) *requestInfo {
	ri, _ := r.Context().Value(keyRequest).(*requestInfo)
	if ri == nil {
		return &requestInfo{}
	}
	return ri
}

func requestID(r *http.Request) string { return infoOf(r).id }

func claimsOf(r *http.Request) auth.Claims { return infoOf(r).claims }

// requestIDs makes the ids of requests that come without one: a random
// prefix per process and a counter, 32 hex digits as before. An id names a
// request in the logs, it guards nothing, so it needs no read of the
// system's random source per request.
type requestIDs struct {
	prefix [16]byte
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [8]byte
	_, _ = rand.Read(b[:])
	ids := &requestIDs{}
	hex.Encode(ids.prefix[:], b[:])
	return ids
}

func (ids *requestIDs) next() string {
	var out [32]byte
	copy(out[:], ids.prefix[:])
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], ids.n.Add(1))
	hex.Encode(out[16:], n[:])
	return string(out[:])
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

// routeMetrics are one route's series, looked up once: a label lookup
// hashes its values on every request.
type routeMetrics struct {
	m     *metrics
	route string
	lat   prometheus.Observer

	mu    sync.RWMutex
	codes map[int]prometheus.Counter
}

func (rm *routeMetrics) code(status int) prometheus.Counter {
	rm.mu.RLock()
	c, ok := rm.codes[status]
	rm.mu.RUnlock()
	if ok {
		return c
	}
	c = rm.m.requests.WithLabelValues(rm.route, strconv.Itoa(status))
	rm.mu.Lock()
	// Bounded by the status codes the handlers write.
	rm.codes[status] = c
	rm.mu.Unlock()
	return c
}

// headerRequestID is canonical already: set as a map key, it skips the
// canonicalisation Header.Set does.
const headerRequestID = "X-Request-Id"

// wrap adds the request id, CORS, the access log and the per-route metrics.
// route is the mux pattern, a bounded label.
func (g *Gateway) wrap(route string, h http.Handler) http.Handler {
	rm := &routeMetrics{m: g.m, route: route, lat: g.m.latency.WithLabelValues(route), codes: map[int]prometheus.Counter{}}
	serverErrs, clientErrs := g.m.errors.WithLabelValues(route, "server"), g.m.errors.WithLabelValues(route, "client")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(headerRequestID)
		if id == "" || len(id) > 64 || strings.ContainsFunc(id, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
			id = g.ids.next()
		}
		w.Header()[headerRequestID] = []string{id}
		g.cors(w, r)
		rec := &recorder{ResponseWriter: w}
		ri := &requestInfo{id: id}
		r = r.WithContext(context.WithValue(r.Context(), keyRequest, ri))
		h.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		elapsed := time.Since(start)
		rm.lat.Observe(elapsed.Seconds())
		rm.code(rec.status).Inc()
		switch {
		case rec.status >= 500:
			serverErrs.Inc()
		case rec.status >= 400:
			clientErrs.Inc()
		}
		lvl := slog.LevelDebug
		if rec.status >= 500 {
			lvl = slog.LevelWarn
		}
		// Checked first: the arguments alone cost allocations on every
		// request, and the access log is off at the default level.
		if g.log.Enabled(r.Context(), lvl) {
			g.log.Log(r.Context(), lvl, "http request", "request_id", id, "method", r.Method, "path", r.URL.Path, "route", route,
				"status", rec.status, "bytes", rec.bytes, "duration", elapsed, "remote", remoteIP(r), "user", ri.claims.Subject)
		}
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
