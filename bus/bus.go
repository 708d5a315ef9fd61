// Package bus owns the process's link to NATS: either an embedded
// nats-server with JetStream file storage under the data dir, reached in
// process, or a connection to an external server or cluster. Workers get a
// jetstream.JetStream from it and never know which of the two it is.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// Config says which NATS to use.
type Config struct {
	// URL of an external NATS; empty starts an embedded server.
	URL string
	// DataDir holds the embedded server's JetStream store.
	DataDir string
	// Listen, when set, exposes the embedded server on host:port so that
	// the nats CLI can inspect it. Off by default so that it never
	// collides with a server already on 4222.
	Listen string
	// Replicas of every stream and bucket: 1 embedded, 3 on a cluster.
	Replicas int
	// Name identifies the connection in server monitoring.
	Name string
}

// Bus is an open link to NATS with the topology ensured.
type Bus struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	Topology streams.Topology
	server   *server.Server
	log      *slog.Logger
}

// Open starts or connects to NATS and ensures the topology. The caller owns
// the Bus and must Close it.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Bus, error) {
	b := &Bus{log: log}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
	}
	if cfg.URL == "" {
		s, err := startEmbedded(cfg)
		if err != nil {
			return nil, err
		}
		b.server = s
		opts = append(opts, nats.InProcessServer(s))
		log.Info("embedded nats started", "store_dir", s.StoreDir(), "listen", cfg.Listen)
	} else {
		// A standalone role may start before the cluster: keep trying.
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		b.shutdownServer()
		return nil, fmt.Errorf("bus: connect %s: %w", redactURL(cfg.URL), err)
	}
	b.NC = nc
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b.JS = js
	b.Topology = streams.Declare(cfg.Replicas)
	if err := ensureWithRetry(ctx, js, b.Topology, log); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// ensureWithRetry waits for JetStream to answer (an external cluster may
// still be electing its meta leader) and then applies the topology.
func ensureWithRetry(ctx context.Context, js jetstream.JetStream, topo streams.Topology, log *slog.Logger) error {
	delay := 250 * time.Millisecond
	for {
		ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
		diffs, err := streams.EnsureReport(ectx, js, topo)
		cancel()
		if err == nil {
			for _, d := range diffs {
				log.Warn("topology differs from the declaration", "stream", d.Stream, "limit", d.Limit,
					"existing", d.Existing, "declared", d.Declared, "kept_existing", d.Kept)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("bus: ensure topology: %w", errors.Join(err, ctx.Err()))
		}
		log.Warn("topology not ensured yet, retrying", "err", err, "in", delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func startEmbedded(cfg Config) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "cryptostream",
		JetStream:  true,
		// nats-server keeps its store in a "jetstream" folder under StoreDir.
		StoreDir:   cfg.DataDir,
		NoSigs:     true,
		NoLog:      true,
		DontListen: cfg.Listen == "",
	}
	if cfg.Listen != "" {
		host, portStr, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("bus: --nats-listen %q: %w", cfg.Listen, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("bus: --nats-listen port %q: %w", portStr, err)
		}
		opts.Host, opts.Port = host, port
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		s.Shutdown()
		return nil, errors.New("bus: embedded server did not become ready")
	}
	return s, nil
}

// Embedded reports whether the bus runs its own server.
func (b *Bus) Embedded() bool { return b.server != nil }

// ClientURL is the embedded server's listen URL, empty when it does not
// listen or the bus is external.
func (b *Bus) ClientURL() string {
	if b.server == nil || b.server.Addr() == nil {
		return ""
	}
	return b.server.ClientURL()
}

// Ready reports whether JetStream answers.
func (b *Bus) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := b.JS.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	return nil
}

// Close drains the connection, so that pending publishes and acks are
// flushed, and then stops the embedded server.
func (b *Bus) Close() {
	if b.NC != nil {
		closed := make(chan struct{})
		b.NC.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := b.NC.Drain(); err != nil {
			b.NC.Close()
		} else {
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				b.log.Warn("nats drain timed out")
				b.NC.Close()
			}
		}
	}
	b.shutdownServer()
}

func (b *Bus) shutdownServer() {
	if b.server != nil {
		b.server.Shutdown()
		b.server.WaitForShutdown()
	}
}

// redactURL hides credentials: a URL may carry user:password.
func redactURL(raw string) string {
	if raw == "" {
		return "embedded"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable url)"
	}
	return u.Redacted()
}
