package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"cryptostream/gateway"
	"cryptostream/gateway/auth"
	"cryptostream/gateway/hub"
	"cryptostream/ingest/krakenrest"
	"cryptostream/natstest"
	"cryptostream/readmodel"
	"cryptostream/streams"
)

const (
	adminName = "root"
	adminPass = "root-password-1"
)

// stack is the gateway on real HTTP over loopback, against an embedded
// JetStream and a fake Kraken REST serving the recorded AssetPairs answer.
type stack struct {
	t          testing.TB
	url        string
	js         jetstream.JetStream
	gw         *gateway.Gateway
	key        []byte
	tokens     *auth.Tokens
	srv        *httptest.Server
	kraken     *httptest.Server
	krakenN    atomic.Int32
	krakenDown atomic.Bool
	reg        *prometheus.Registry
	// stopRun ends gw.Run and waits for it (it flushes aggregated audit
	// events on the way out); idempotent.
	stopRun func()
}

type option func(*gateway.Config, *gateway.Deps)

// recordedAssetPairs is Kraken's real AssetPairs answer from the shared
// recordings.
func recordedAssetPairs(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("/work/shared/kraken/rest_ticker_and_assetpairs_examples.json")
	if err != nil {
		t.Fatal(err)
	}
	var all map[string]struct {
		Response json.RawMessage `json:"response"`
	}
	if err := json.Unmarshal(b, &all); err != nil {
		t.Fatal(err)
	}
	return all["assetpairs_official_example"].Response
}

func newStack(t testing.TB, opts ...option) *stack {
	t.Helper()
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv)
	if err := streams.Ensure(t.Context(), js, streams.Declare(1)); err != nil {
		t.Fatal(err)
	}
	return newStackOn(t, js, opts...)
}

// newStackOn is a gateway on a bus whose topology is in place: several
// of them on one cluster are a deployment's replicas, sharing the users
// and the signing key.
func newStackOn(t testing.TB, js jetstream.JetStream, opts ...option) *stack {
	t.Helper()
	s := &stack{t: t, js: js, key: bytes.Repeat([]byte("k"), 48), reg: prometheus.NewRegistry()}
	pairs := recordedAssetPairs(t)
	s.kraken = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.krakenN.Add(1)
		if s.krakenDown.Load() || r.URL.Path != "/0/public/AssetPairs" {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(pairs)
	}))
	t.Cleanup(s.kraken.Close)
	var err error
	s.tokens, err = auth.NewTokens(s.key, 30*time.Minute, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{BcryptCost: bcrypt.MinCost, LoginUserBurst: 50, LoginIPBurst: 1000, LoginIPEvery: time.Millisecond, LoginUserEvery: time.Millisecond,
		LoginBrakeBurst: 1000, LoginBrakeEvery: time.Millisecond,
		Hub: hub.Config{QueueSize: 16, MaxPending: 64}}
	d := gateway.Deps{
		Publisher: js, Reader: readmodel.NewJetStream(js),
		Pairs:   gateway.KrakenREST{Client: &krakenrest.Client{BaseURL: s.kraken.URL}},
		Streams: js, Tokens: s.tokens, Metrics: s.reg,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	// The buckets first, so that an option can stand in front of one.
	if err := gateway.OpenBuckets(t.Context(), js, &d); err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		o(&cfg, &d)
	}
	s.gw, err = gateway.New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.gw.EnsureAdmin(t.Context(), adminName, adminPass); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	s.gw.Register(mux)
	s.srv = httptest.NewUnstartedServer(mux)
	// Small server send buffers make a client that stops reading back up
	// after kilobytes rather than megabytes of kernel buffering.
	s.srv.Listener = smallSendBuffers{s.srv.Listener}
	s.srv.Config.RegisterOnShutdown(s.gw.Shutdown)
	s.srv.Start()
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(t.Context()))
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		if err := s.gw.Run(runCtx); err != nil {
			t.Errorf("gateway run: %v", err)
		}
	}()
	s.stopRun = func() { stopRun(); <-ran }
	t.Cleanup(func() {
		s.stopRun()
		s.gw.Shutdown()
		s.srv.Close()
	})
	s.url = s.srv.URL
	return s
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// errCode returns the error code of the one error shape, failing the test
// when the body is not in that shape.
func (r reply) errCode(t testing.TB) string {
	t.Helper()
	var e struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("status %d body %q is not the error shape (%v)", r.status, r.body, err)
	}
	return e.Error.Code
}

func (s *stack) do(method, path, token, contentType string, body io.Reader) reply {
	s.t.Helper()
	req, err := http.NewRequestWithContext(s.t.Context(), method, s.url+path, body)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

func (s *stack) call(method, path, token string, body any) reply {
	s.t.Helper()
	var r io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case string:
		r, ct = strings.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		r, ct = bytes.NewReader(j), "application/json"
	}
	return s.do(method, path, token, ct, r)
}

func (s *stack) expect(r reply, status int) reply {
	s.t.Helper()
	if r.status != status {
		s.t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	return r
}

// usersKV is the users bucket itself, for writes from outside the gateway.
func (s *stack) usersKV() jetstream.KeyValue {
	s.t.Helper()
	kv, err := s.js.KeyValue(s.t.Context(), streams.BucketUsers)
	if err != nil {
		s.t.Fatal(err)
	}
	return kv
}

// issue signs a token of tokens for a user as stored now.
func (s *stack) issue(tokens *auth.Tokens, name string) string {
	s.t.Helper()
	u, _, err := s.gw.Users().Get(s.t.Context(), name)
	if err != nil {
		s.t.Fatal(err)
	}
	tok, _, err := tokens.Issue(u)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

func (s *stack) login(user, pass string) string {
	s.t.Helper()
	r := s.expect(s.call("POST", "/auth/login", "", map[string]string{"username": user, "password": pass}), http.StatusOK)
	tok, _ := r.json(s.t)["access_token"].(string)
	if tok == "" {
		s.t.Fatalf("no token in %s", r.body)
	}
	return tok
}

func (s *stack) signup(user, pass string) string {
	s.t.Helper()
	s.expect(s.call("POST", "/auth/signup", "", map[string]string{"username": user, "password": pass}), http.StatusCreated)
	return s.login(user, pass)
}

// auditEvents reads every audit event so far.
func (s *stack) auditEvents() []streams.AuditEvent {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.t.Context(), 10*time.Second)
	defer cancel()
	st, err := s.js.Stream(ctx, streams.StreamAudit)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	var out []streams.AuditEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			s.t.Fatal(err)
		}
		ev, err := streams.Decode[streams.AuditEvent](m.Data)
		if err != nil {
			s.t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

func countAudit(evs []streams.AuditEvent, action, outcome, target string) int {
	n := 0
	for _, e := range evs {
		if e.Action == action && e.Outcome == outcome && (target == "" || e.Target == target) {
			n++
		}
	}
	return n
}

type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(8192)
	}
	return c, err
}
