package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"cryptostream/bus"
	"cryptostream/gateway"
	"cryptostream/gateway/auth"
	"cryptostream/gateway/hub"
	"cryptostream/ingest/krakenrest"
	"cryptostream/readmodel"
	"cryptostream/streams"
)

// gatewayConfig is the gateway's part of the configuration, shared by `run`
// and `gateway`.
type gatewayConfig struct {
	JWTSecretFile string
	AdminUsername string
	AdminPassword string
	CORSOrigins   string
	TokenTTL      time.Duration
	BcryptCost    int
	KrakenRESTURL string
	// Intervals the ingester runs: websocket channels on others are
	// refused. Shared with the ingester's flag the same way as
	// kraken-rest-url.
	Intervals string
	intervals []streams.Interval
	// MaxAlertRules per user; AllowPrivateWebhooks is shared with the
	// notifier (see registerPrivateWebhooks).
	MaxAlertRules        int
	AllowPrivateWebhooks bool
	// WSWriteDelay is hub.Config.WriteDelay.
	WSWriteDelay time.Duration
	// WSIOURing is hub.Config.RingWrites.
	WSIOURing bool
}

func (c *gatewayConfig) register(fs *flagSet) {
	fs.stringVar(&c.JWTSecretFile, "jwt-secret-file", "JWT_SECRET_FILE", "", "file holding the token signing key (at least 32 bytes); empty generates one once into <data-dir>/jwt.key (0600). Every gateway replica needs the same key")
	fs.stringVar(&c.AdminUsername, "admin-username", "ADMIN_USERNAME", "admin", "the first admin, created at start when no admin exists")
	fs.stringVar(&c.AdminPassword, "admin-password", "ADMIN_PASSWORD", "", "the first admin's password; empty generates one and logs it once")
	fs.stringVar(&c.CORSOrigins, "cors-origins", "CORS_ORIGINS", "", "comma-separated origins allowed to call the API from a browser; * allows any; empty allows none")
	fs.durationVar(&c.TokenTTL, "token-ttl", "TOKEN_TTL", 30*time.Minute, "lifetime of an access token; there is no refresh token, clients log in again")
	fs.intVar(&c.BcryptCost, "bcrypt-cost", "BCRYPT_COST", auth.DefaultCost, "bcrypt cost of new password hashes (10 to 14)")
	// The ingester reads the same REST API; whoever registers the flag
	// first owns it and the other reads it back after parsing.
	if fs.Lookup("kraken-rest-url") == nil {
		fs.stringVar(&c.KrakenRESTURL, "kraken-rest-url", "KRAKEN_REST_URL", krakenrest.DefaultBaseURL, "Kraken REST base URL (AssetPairs for asset validation)")
	}
	fs.intVar(&c.MaxAlertRules, "max-alert-rules", "MAX_ALERT_RULES", 100, "alert rules one user may hold")
	fs.durationVar(&c.WSWriteDelay, "ws-write-delay", "WS_WRITE_DELAY", hub.DefaultWriteDelay, "the shortest time between two rounds of a websocket flusher, each writing what every client queued in one write per client (fewer system calls at thousands of clients); a round starts at once when the last one is older, so only a busy gateway makes a frame wait, up to this much; 0 writes each client's frames at once from its own goroutine")
	fs.boolVar(&c.WSIOURing, "ws-io-uring", "WS_IO_URING", false, "the websocket flushers send a batch of 64 clients' frames per io_uring_enter instead of one writev per client: 0.65x the gateway's CPU per delivered message at 10,000 clients, but a 1.35x p99 delay on this VM (BENCHMARKS.md, \"The flush round through io_uring\"), so off by default; where io_uring is not allowed it falls back to writev")
	registerPrivateWebhooks(fs, &c.AllowPrivateWebhooks)
	if fs.Lookup("intervals") == nil {
		fs.stringVar(&c.Intervals, "intervals", "INTERVALS", "1m", "comma-separated candle intervals the ingester runs; websocket channels on others are refused")
	}
}

func (c *gatewayConfig) validate(fs *flagSet) error {
	if c.KrakenRESTURL == "" {
		if f := fs.Lookup("kraken-rest-url"); f != nil {
			c.KrakenRESTURL = f.Value.String()
		}
	}
	if c.Intervals == "" {
		if f := fs.Lookup("intervals"); f != nil {
			c.Intervals = f.Value.String()
		}
	}
	c.intervals = nil
	for _, s := range strings.Split(c.Intervals, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		iv, err := streams.ParseInterval(s)
		if err != nil {
			return fmt.Errorf("--intervals: %w", err)
		}
		c.intervals = append(c.intervals, iv)
	}
	c.AllowPrivateWebhooks = lookupBool(fs, "allow-private-webhooks")
	if c.MaxAlertRules < 1 {
		return fmt.Errorf("--max-alert-rules %d: must be positive", c.MaxAlertRules)
	}
	if c.WSWriteDelay < 0 || c.WSWriteDelay > time.Second {
		return fmt.Errorf("--ws-write-delay %s: want 0 to 1s", c.WSWriteDelay)
	}
	if c.TokenTTL < time.Minute || c.TokenTTL > 24*time.Hour {
		return fmt.Errorf("--token-ttl %s: want 1m to 24h", c.TokenTTL)
	}
	if c.BcryptCost < 10 || c.BcryptCost > 14 {
		return fmt.Errorf("--bcrypt-cost %d: want 10 to 14", c.BcryptCost)
	}
	if err := auth.ValidateUsername(c.AdminUsername); err != nil {
		return fmt.Errorf("--admin-username: %w", err)
	}
	if c.AdminPassword != "" {
		if err := auth.ValidatePassword(c.AdminPassword); err != nil {
			return fmt.Errorf("--admin-password: %w", err)
		}
	}
	return nil
}

// LogValue logs the configuration without the admin password.
func (c gatewayConfig) LogValue() slog.Value {
	pw := ""
	if c.AdminPassword != "" {
		pw = "(redacted)"
	}
	return slog.GroupValue(
		slog.String("jwt_secret_file", c.JWTSecretFile),
		slog.String("admin_username", c.AdminUsername),
		slog.String("admin_password", pw),
		slog.String("cors_origins", c.CORSOrigins),
		slog.Duration("token_ttl", c.TokenTTL),
		slog.Int("bcrypt_cost", c.BcryptCost),
		slog.String("kraken_rest_url", c.KrakenRESTURL),
	)
}

// newGateway builds the gateway on an open bus and creates the first admin
// if there is none.
func newGateway(ctx context.Context, cfg gatewayConfig, dataDir string, b *bus.Bus, reader readmodel.Reader, reg prometheus.Registerer, log *slog.Logger) (*gateway.Gateway, error) {
	key, err := auth.LoadKey(cfg.JWTSecretFile, dataDir)
	if err != nil {
		return nil, err
	}
	tokens, err := auth.NewTokens(key, cfg.TokenTTL, nil)
	if err != nil {
		return nil, err
	}
	var origins []string
	for _, o := range strings.Split(cfg.CORSOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	d := gateway.Deps{
		Publisher: b.JS, Reader: reader, Streams: b.JS,
		Pairs:  gateway.KrakenREST{Client: &krakenrest.Client{BaseURL: cfg.KrakenRESTURL}},
		Tokens: tokens, Metrics: reg, Log: log,
	}
	if err := gateway.OpenBuckets(ctx, b.JS, &d); err != nil {
		return nil, err
	}
	g, err := gateway.New(gateway.Config{BcryptCost: cfg.BcryptCost, CORSOrigins: origins, Hub: hub.Config{Intervals: cfg.intervals, WriteDelay: cfg.WSWriteDelay, RingWrites: cfg.WSIOURing},
		MaxAlertRules: cfg.MaxAlertRules, AllowPrivateWebhooks: cfg.AllowPrivateWebhooks}, d)
	if err != nil {
		return nil, err
	}
	// No deadline around it: hashing the first admin's password is CPU
	// work (cost 12) that a busy machine slows without being stuck, and
	// each bucket call takes jetstream's own API timeout.
	if err := g.EnsureAdmin(ctx, cfg.AdminUsername, cfg.AdminPassword); err != nil {
		return nil, err
	}
	return g, nil
}

// addGateway mounts the gateway on the system's mux (beside /metrics,
// /healthz and /readyz), runs its hub as a worker and closes its websockets
// when the HTTP server shuts down.
func addGateway(ctx context.Context, s *system, cfg *runConfig) error {
	// With --database-url the gateway reads history from the SQL read
	// model, otherwise from JetStream.
	var reader readmodel.Reader = readmodel.NewJetStream(s.bus.JS)
	if cfg.DatabaseURL != "" {
		if _, err := s.database(ctx, cfg); err != nil {
			return err
		}
		reader = s.reader
	}
	// The latest candle and prediction of every series from memory, kept
	// current by following the streams, in front of either reader.
	latest := readmodel.NewLatest(s.bus.JS, reader, readmodel.LatestConfig{Log: s.log, Metrics: s.registry})
	s.workers["latest"] = latest
	// Not ready until asset_latest answers from a view that is current.
	s.health.AddCheck("latest", latest.Ready)
	g, err := newGateway(ctx, cfg.Gateway, cfg.DataDir, s.bus, latest, s.registry, s.log)
	if err != nil {
		return err
	}
	g.Register(s.mux)
	s.server.RegisterOnShutdown(g.Shutdown)
	s.workers["gateway"] = g
	return nil
}
