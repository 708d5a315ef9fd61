// Package gateway owns the HTTP face of cryptostream: the REST API (auth,
// users, assets, history, predictions, jobs), its OpenAPI document, the
// request middleware (request id, access log, metrics, CORS, body limits)
// and the mounting of the websocket hub at /ws.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"cryptostream/gateway/auth"
	"cryptostream/gateway/hub"
	"cryptostream/notifier"
	"cryptostream/readmodel"
	"cryptostream/registry"
	"cryptostream/streams"
)

// Config is the gateway's tuning. Zero values take the defaults.
type Config struct {
	// BcryptCost of new password hashes.
	BcryptCost int
	// CORSOrigins allowed to call the API from a browser; "*" allows any.
	CORSOrigins []string
	// MaxBodyBytes bounds a request body.
	MaxBodyBytes int64
	// Password-check limits (login, and a password change's check of the
	// current password), each a burst of failures and the period that
	// gives one back: per client address (LoginIP), per (username,
	// address) (LoginUser), and the per-username brake (LoginBrake) that
	// only holds back addresses which are failing themselves. Successes
	// are not charged. LoginIP also bounds signups per address.
	LoginIPBurst, LoginUserBurst, LoginBrakeBurst int
	LoginIPEvery, LoginUserEvery, LoginBrakeEvery time.Duration
	// AuditFlushEvery is how often refused (rate-limited) attempts are
	// written to AUDIT, one counted event per (action, username, address).
	AuditFlushEvery time.Duration
	// PairsTTL is how long Kraken's pair list is cached.
	PairsTTL time.Duration
	// IOTimeout bounds each NATS round trip a request makes.
	IOTimeout time.Duration
	// Hub configures the websocket hub.
	Hub hub.Config
	// MaxAlertRules caps the alert rules one user may hold.
	MaxAlertRules int
	// AllowPrivateWebhooks lets webhook targets be loopback, link-local or
	// private addresses: for a closed network, never on a public server.
	AllowPrivateWebhooks bool
}

func (c *Config) defaults() {
	if c.BcryptCost == 0 {
		c.BcryptCost = auth.DefaultCost
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.LoginIPBurst == 0 {
		c.LoginIPBurst = 20
	}
	if c.LoginIPEvery == 0 {
		c.LoginIPEvery = 3 * time.Second
	}
	if c.LoginUserBurst == 0 {
		c.LoginUserBurst = 5
	}
	if c.LoginUserEvery == 0 {
		c.LoginUserEvery = 12 * time.Second
	}
	if c.LoginBrakeBurst == 0 {
		c.LoginBrakeBurst = 20
	}
	if c.LoginBrakeEvery == 0 {
		c.LoginBrakeEvery = 6 * time.Second
	}
	if c.AuditFlushEvery == 0 {
		c.AuditFlushEvery = 10 * time.Second
	}
	if c.PairsTTL == 0 {
		c.PairsTTL = time.Hour
	}
	if c.IOTimeout == 0 {
		c.IOTimeout = 5 * time.Second
	}
	if c.MaxAlertRules == 0 {
		c.MaxAlertRules = 100
	}
	// The hub's own default, set here so that the REST side (the intervals
	// /crypto/assets lists, the preferences it accepts) names the same.
	if len(c.Hub.Intervals) == 0 {
		c.Hub.Intervals = []streams.Interval{streams.Interval1m}
	}
}

// Bucket is the part of a KV bucket the gateway reads and writes.
type Bucket = auth.KV

// Deps are what the gateway talks to.
type Deps struct {
	Users, Assets, Registry Bucket
	// Jobs is the jobs bucket, written through registry.Jobs.
	Jobs registry.JobBucket
	// Reports holds the backtests' HTML reports; without it
	// /backtests/{id}/report.html answers 503.
	Reports ReportStore
	// Prefs holds each user's dashboard preferences.
	Prefs Bucket
	// Rules is the alert-rules bucket; without it the alert routes answer
	// 503.
	Rules Bucket
	// Resolver checks webhook hosts; nil for net.DefaultResolver.
	Resolver notifier.Resolver
	// Publisher stores jobs and audit events.
	Publisher streams.Publisher
	// Reader answers history questions (JetStream or PostgreSQL).
	Reader readmodel.Reader
	// Pairs lists Kraken's tradable pairs.
	Pairs PairSource
	// Streams feeds the websocket hub.
	Streams hub.Source
	Tokens  *auth.Tokens
	Metrics prometheus.Registerer
	Log     *slog.Logger
	// Now is the clock; nil for time.Now.
	Now func() time.Time
}

// Gateway serves the API.
type Gateway struct {
	cfg       Config
	d         Deps
	log       *slog.Logger
	now       func() time.Time
	users     *auth.Users
	sessions  *auth.Sessions
	guard     *auth.Guard
	signupLim *auth.Limiter
	refused   *auditAgg
	pairs     *pairCache
	hub       *hub.Hub
	m         *metrics
	rules     *notifier.Store
	reaper    *ruleReaper
	assets    *trackedAssets
	fired     *firings
	tokens    *tokenCache
	jobs      *registry.Jobs
	ids       *requestIDs
	// latest is the reader when it holds the newest answers in memory.
	latest       latestAnswers
	latestBodies latestBodies
}

// New builds a gateway; it does no I/O.
func New(cfg Config, d Deps) (*Gateway, error) {
	cfg.defaults()
	switch {
	case d.Users == nil || d.Assets == nil || d.Jobs == nil || d.Registry == nil || d.Prefs == nil:
		return nil, errors.New("gateway: the users, assets, jobs, model-registry and preferences buckets are required")
	case d.Publisher == nil || d.Reader == nil || d.Pairs == nil || d.Streams == nil || d.Tokens == nil:
		return nil, errors.New("gateway: publisher, reader, pairs, streams and tokens are required")
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.Metrics == nil {
		d.Metrics = prometheus.NewRegistry()
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	log := d.Log.With("worker", "gateway")
	assets := newTrackedAssets(d.Assets, log)
	users := auth.NewUsers(d.Users, now)
	// A bucket that cannot be watched (a test double) is read on every
	// check instead.
	watch, _ := d.Users.(auth.Watcher)
	g := &Gateway{
		cfg:      cfg,
		d:        d,
		log:      log,
		now:      now,
		users:    users,
		sessions: auth.NewSessions(users, watch, log),
		guard: auth.NewGuard(auth.GuardConfig{
			AddrBurst: cfg.LoginIPBurst, AddrEvery: cfg.LoginIPEvery,
			PairBurst: cfg.LoginUserBurst, PairEvery: cfg.LoginUserEvery,
			UserBurst: cfg.LoginBrakeBurst, UserEvery: cfg.LoginBrakeEvery,
		}, now),
		signupLim: auth.NewLimiter(cfg.LoginIPEvery, cfg.LoginIPBurst, 100_000, now),
		refused:   newAuditAgg(maxRefusedKeys),
		pairs:     &pairCache{src: d.Pairs, ttl: cfg.PairsTTL, now: now},
		m:         newMetrics(d.Metrics),
		tokens:    newTokenCache(d.Tokens.Verify, now, 10_000),
		jobs:      registry.NewJobs(d.Jobs, d.Publisher, now),
		ids:       newRequestIDs(),
		assets:    assets,
	}
	// The websocket upgrade checks revocation too, not only the signature.
	h, err := hub.New(cfg.Hub, hub.Deps{Source: d.Streams, Verify: g.verifyToken, Check: g.sessions.Check, Tracked: assets.Tracked, Metrics: d.Metrics, Log: log, Now: now})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.hub = h
	g.latest, _ = d.Reader.(latestAnswers)
	g.sessions.OnChange(h.Revalidate)
	if d.Rules != nil {
		g.rules = notifier.NewStore(d.Rules, cfg.MaxAlertRules, now)
		g.rules.OnUnreadable = func(id string, err error) {
			g.m.ruleRejects.WithLabelValues("stored_unreadable").Inc()
			g.log.Error("stored alert rule skipped: it does not decode", "rule_id", id, "err", err)
		}
		g.fired = newFirings(d.Streams, log)
		g.reaper = newRuleReaper()
		g.sessions.OnGone(g.reaper.add)
	}
	return g, nil
}

// Users is the users store, for the `user` subcommand and bootstrap.
func (g *Gateway) Users() *auth.Users { return g.users }

// EnsureAdmin moves accounts stored under names from before usernames were
// canonical (see auth.Users.Canonicalize), gives alert rules from before
// rules named accounts their owner's account ID, then creates the first
// admin when none exists, logging a generated password once.
func (g *Gateway) EnsureAdmin(ctx context.Context, name, password string) error {
	renamed, err := g.users.Canonicalize(ctx)
	for _, r := range renamed {
		if r.Collided {
			g.log.Warn("renamed an account whose case-folded name was taken; tell its owner", "from", r.From, "to", r.To)
		} else {
			g.log.Info("moved an account to its canonical name", "from", r.From, "to", r.To)
		}
		g.audit(ctx, "user.rename", "system", r.To, "ok", "", "from "+r.From)
	}
	if err != nil {
		return fmt.Errorf("gateway: canonicalize usernames: %w", err)
	}
	if err := g.adoptRuleOwners(ctx, renamed); err != nil {
		return err
	}
	created, generated, err := g.users.EnsureAdmin(ctx, name, password, g.cfg.BcryptCost)
	if err != nil {
		return fmt.Errorf("gateway: ensure admin: %w", err)
	}
	if !created {
		return nil
	}
	if name == "" {
		name = "admin"
	}
	name, _ = auth.CanonicalUsername(name)
	if generated != "" {
		// Printed once on purpose: this is the only way to learn it.
		g.log.Warn("created the first admin with a generated password; change it now", "username", name, "password", generated)
	} else {
		g.log.Info("created the first admin", "username", name)
	}
	g.audit(ctx, "user.bootstrap", "system", name, "ok", "", "first admin")
	return nil
}

// Shutdown closes every websocket connection with "going away". Register it
// with http.Server.RegisterOnShutdown: Shutdown does not close hijacked
// connections.
func (g *Gateway) Shutdown() { g.hub.Shutdown() }

// SessionsSynced reports whether the users mirror that token checks read
// holds the whole bucket.
func (g *Gateway) SessionsSynced() bool { return g.sessions.Synced() }

// AssetsSynced reports whether the watched copy of the assets bucket that
// answers "is this asset tracked" holds the whole bucket.
func (g *Gateway) AssetsSynced() bool { return g.assets.Synced() }

// Tracks reports whether the watched copy of the assets bucket has sym
// tracked (false before it is synced).
func (g *Gateway) Tracks(sym string) bool {
	if !g.assets.Synced() {
		return false
	}
	ok, _ := g.assets.Tracked(context.Background(), sym)
	return ok
}

// AlertsIndexed reports whether the index of when each rule last fired has
// read ALERTS up to where it stood when the gateway started.
func (g *Gateway) AlertsIndexed() bool { return g.fired != nil && g.fired.Caught() }

// Clients is the number of connected websocket clients.
func (g *Gateway) Clients() int { return g.hub.Clients() }

// Run runs the hub, the users mirror that token checks read, the watched
// copy of the assets bucket, the deletion of gone accounts' alert rules,
// the index of when each rule last fired, and the writing of aggregated audit
// events, until ctx ends.
func (g *Gateway) Run(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return g.hub.Run(ctx) })
	if g.reaper != nil {
		eg.Go(func() error { g.reapRules(ctx); return nil })
		eg.Go(func() error { return g.fired.Run(ctx) })
	}
	eg.Go(func() error { return g.sessions.Run(ctx) })
	eg.Go(func() error { return g.assets.Run(ctx) })
	eg.Go(func() error { return g.flushRefusedEvery(ctx, g.cfg.AuditFlushEvery) })
	return eg.Wait()
}

// Register mounts every route on mux.
func (g *Gateway) Register(mux *http.ServeMux) {
	for _, r := range g.routes() {
		mux.Handle(r.pattern, g.wrap(r.pattern, r.handler))
	}
}

// OpenBuckets opens the buckets the gateway needs from a JetStream
// context; a small helper for the command wiring and tests.
func OpenBuckets(ctx context.Context, js jetstream.JetStream, d *Deps) error {
	for _, b := range []struct {
		name string
		dst  *Bucket
	}{{streams.BucketUsers, &d.Users}, {streams.BucketAssets, &d.Assets}, {streams.BucketModelRegistry, &d.Registry}, {streams.BucketPreferences, &d.Prefs}, {streams.BucketAlertRules, &d.Rules}} {
		kv, err := js.KeyValue(ctx, b.name)
		if err != nil {
			return fmt.Errorf("gateway: open bucket %s: %w", b.name, err)
		}
		*b.dst = kv
	}
	kv, err := js.KeyValue(ctx, streams.BucketJobs)
	if err != nil {
		return fmt.Errorf("gateway: open bucket %s: %w", streams.BucketJobs, err)
	}
	d.Jobs = kv
	obj, err := js.ObjectStore(ctx, streams.ObjectStoreModels)
	if err != nil {
		return fmt.Errorf("gateway: open object store %s: %w", streams.ObjectStoreModels, err)
	}
	d.Reports = obj
	return nil
}
