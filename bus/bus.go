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
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/streams"
)

// Config says which NATS to use.
type Config struct {
	// URL of an external NATS (comma-separated for a cluster); empty
	// starts an embedded server.
	URL string
	// DataDir holds the embedded server's JetStream store, its lock and
	// its generated credential.
	DataDir string
	// Listen is where the embedded server takes clients such as the nats
	// CLI; empty takes a random loopback port, published in
	// <DataDir>/nats.url for the tools on the same data dir. Every client
	// needs the credential either way.
	Listen string
	// Replicas of every stream and bucket: 1 embedded, 3 on a cluster.
	Replicas int
	// Name identifies the connection in server monitoring.
	Name string
	// NKeyFile is an NKey user seed. Embedded, the only key the server
	// admits (empty: one generated once into <DataDir>/nats.nkey, 0600);
	// external, the client's key.
	NKeyFile string
	// CredsFile is a JWT credentials file for an external server.
	CredsFile string
	// User and Password authenticate to an external server, as a URL's
	// user:password would, without putting the password in the URL.
	User, Password string
	// TLSCA verifies an external server's certificate (empty: the system
	// roots); TLSCert and TLSKey are the client's certificate for servers
	// that verify clients. Any of them turns TLS on.
	TLSCA, TLSCert, TLSKey string
	// ListenTLSCert and ListenTLSKey put the embedded server's client
	// listener (Listen) on TLS only; ListenTLSCA, when set, makes it
	// verify every client's certificate against that CA (mutual TLS).
	// The process's own connection is in process and takes no TLS.
	ListenTLSCert, ListenTLSKey, ListenTLSCA string
	// DataKeyFile holds the key that encrypts the embedded server's
	// JetStream store at rest; empty stores in clear. A store written
	// with a key opens only with that key (see openStoreCheck).
	DataKeyFile string
	// MaxStore bounds the embedded server's file store in bytes; zero
	// leaves the server's default, three quarters of the free disk. The
	// streams' MaxBytes are fitted to whichever it is.
	MaxStore int64
	// Attach lets a tool with no URL reach the process that holds DataDir
	// through the URL it published, rather than fail on the lock.
	Attach bool
	// Role is the role whose NATS user the external credential is (see
	// Permissions); empty for a user with every permission. A role other
	// than admin verifies the topology instead of applying it, takes its
	// own inbox prefix, and looks only at the streams it may see.
	Role string
}

// Bus is an open link to NATS with the topology ensured.
type Bus struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	Topology streams.Topology
	server   *server.Server
	lock     *dirLock
	urlFile  string
	log      *slog.Logger

	mu sync.Mutex
	// lastErr is the cause of the last failed connection attempt, and
	// ensured whether the topology has been applied: readiness says why
	// the process is not ready yet.
	lastErr error
	ensured bool
	target  string
	// replicas is the configured replica count, for fitting the
	// topology to an account's limit.
	replicas int
	// role is Config.Role on an external server, empty embedded.
	role string
}

// ValidateURL checks a --nats-url before anything connects: each
// comma-separated URL must be nats://, tls://, ws:// or wss:// with a host,
// so a typo fails at start rather than as a silent retry loop.
func ValidateURL(raw string) error {
	for _, part := range strings.Split(raw, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return fmt.Errorf("bus: nats url %q: empty entry", redactURL(raw))
		}
		if !strings.Contains(part, "://") {
			part = "nats://" + part
		}
		u, err := url.Parse(part)
		if err != nil {
			return fmt.Errorf("bus: nats url: %w", err)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("bus: nats url %s: scheme %q: want nats, tls, ws or wss", u.Redacted(), u.Scheme)
		}
		if u.Hostname() == "" {
			return fmt.Errorf("bus: nats url %s: no host", u.Redacted())
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return fmt.Errorf("bus: nats url %s: bad port %q", u.Redacted(), p)
			}
		}
		if u.Path != "" && u.Path != "/" {
			return fmt.Errorf("bus: nats url %s: unexpected path %q", u.Redacted(), u.Path)
		}
	}
	return nil
}

// Open starts or connects to NATS and ensures the topology. The caller owns
// the Bus and must Close it.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*Bus, error) {
	b, err := Dial(cfg, log)
	if err != nil {
		return nil, err
	}
	if err := b.Ensure(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// Dial starts the embedded server or starts connecting to the external one
// and returns at once: an external NATS may come up later, and until it
// does Ready says what the last attempt failed on. Ensure then waits for
// the connection and applies the topology.
func Dial(cfg Config, log *slog.Logger) (*Bus, error) {
	b := &Bus{log: log, Topology: streams.Declare(cfg.Replicas), replicas: max(cfg.Replicas, 1)}
	if cfg.URL == "" && (cfg.TLSCA != "" || cfg.TLSCert != "" || cfg.TLSKey != "") {
		return nil, errors.New("bus: --nats-tls-ca, --nats-tls-cert and --nats-tls-key secure the connection to --nats-url; the embedded server is reached in process")
	}
	if cfg.URL != "" && (cfg.ListenTLSCert != "" || cfg.ListenTLSKey != "" || cfg.ListenTLSCA != "") {
		return nil, errors.New("bus: --nats-listen-tls-* secure the embedded server's listener; with --nats-url there is none")
	}
	if cfg.URL != "" && cfg.DataKeyFile != "" {
		return nil, errors.New("bus: --data-key-file encrypts the embedded server's store; an external cluster encrypts its own (jetstream { cipher, key } in each server's config, see docs/operations.md)")
	}
	if cfg.URL == "" {
		lock, err := lockDataDir(cfg.DataDir)
		if errors.Is(err, ErrDataDirInUse) && cfg.Attach {
			return b.attach(cfg, err, log)
		}
		if err != nil {
			return nil, err
		}
		b.lock = lock
	} else if err := ValidateURL(cfg.URL); err != nil {
		return nil, err
	} else if cfg.Role != "" {
		if !ValidRole(cfg.Role) {
			return nil, fmt.Errorf("bus: NATS role %q: want one of %v", cfg.Role, Roles())
		}
		b.role = cfg.Role
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.ReconnectJitter(500*time.Millisecond, 2*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				b.setErr(err)
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			b.setErr(err)
			log.Warn("nats connection attempt failed", "url", redactURL(cfg.URL), "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			b.setErr(nil)
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ConnectHandler(func(nc *nats.Conn) {
			b.setErr(nil)
			if cfg.URL == "" {
				// The embedded server is reached in process: the URL the
				// client reports is a placeholder, not a listener.
				log.Info("nats connected", "url", "in-process (embedded server)")
				return
			}
			log.Info("nats connected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			b.setErr(err)
			log.Warn("nats error", "err", err)
		}),
	}
	if cfg.URL == "" {
		keyFile := cfg.NKeyFile
		if keyFile == "" {
			keyFile = filepath.Join(cfg.DataDir, KeyFileName)
		}
		pub, err := loadOrCreateKey(keyFile, cfg.NKeyFile == "")
		if err != nil {
			b.lock.release()
			return nil, err
		}
		s, err := startEmbedded(cfg, pub)
		if err != nil {
			b.lock.release()
			return nil, err
		}
		b.server = s
		if jsc := s.JetStreamConfig(); jsc != nil {
			b.fit(jsc.MaxStore, jsc.MaxMemory, "embedded server")
		}
		nkey, err := nats.NkeyOptionFromSeed(keyFile)
		if err != nil {
			b.shutdownServer()
			return nil, fmt.Errorf("bus: nkey: %w", err)
		}
		opts = append(opts, nats.InProcessServer(s), nkey)
		b.urlFile = filepath.Join(cfg.DataDir, URLFileName)
		if err := writeFile0600(b.urlFile, []byte(s.ClientURL()+"\n")); err != nil {
			b.shutdownServer()
			return nil, fmt.Errorf("bus: publish url: %w", err)
		}
		if err := publishListenCert(cfg); err != nil {
			b.shutdownServer()
			return nil, err
		}
		b.target = "embedded"
		log.Info("embedded nats started", "store_dir", s.StoreDir(), "encrypted", cfg.DataKeyFile != "", "url", s.ClientURL(), "nkey_file", keyFile,
			"nats_cli", CLIHint(s.ClientURL(), keyFile))
	} else {
		auth, err := clientAuth(cfg)
		if err != nil {
			return nil, err
		}
		// A standalone role may start before the cluster: keep trying,
		// and say on each attempt why it failed.
		opts = append(append(opts, auth...), nats.RetryOnFailedConnect(true))
		if b.role != "" {
			opts = append(opts, nats.CustomInboxPrefix(InboxPrefix(b.role)))
		}
		b.target = redactURL(cfg.URL)
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
	return b, nil
}

// attach reaches the process that holds the data dir through the URL and
// the credential it left there.
func (b *Bus) attach(cfg Config, lockErr error, log *slog.Logger) (*Bus, error) {
	raw, err := os.ReadFile(filepath.Join(cfg.DataDir, URLFileName))
	if err != nil {
		return nil, fmt.Errorf("%w; and it publishes no NATS URL: %w", lockErr, err)
	}
	cfg.URL = strings.TrimSpace(string(raw))
	if cfg.NKeyFile == "" && cfg.CredsFile == "" {
		cfg.NKeyFile = filepath.Join(cfg.DataDir, KeyFileName)
	}
	cfg.Attach = false
	log.Info("data dir in use: reaching the running process through its NATS", "url", cfg.URL)
	// A running process on this data dir is up: no retrying.
	auth, err := clientAuth(cfg)
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(cfg.URL, "tls://") {
		tc, err := pinnedListenTLS(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("%w; its NATS listener takes TLS: %w", lockErr, err)
		}
		auth = append(auth, nats.Secure(tc))
	}
	nc, err := nats.Connect(cfg.URL, append(auth, nats.Name(cfg.Name))...)
	if err != nil {
		if strings.HasPrefix(cfg.URL, "tls://") {
			return nil, fmt.Errorf("bus: reach the running process at %s: %w (a listener that verifies client certificates takes a tool only through --nats-url with --nats-tls-ca, --nats-tls-cert and --nats-tls-key)", cfg.URL, err)
		}
		return nil, fmt.Errorf("bus: reach the running process at %s: %w", cfg.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b.NC, b.JS, b.target = nc, js, cfg.URL
	return b, nil
}

// ClientAuth is the credential and TLS an external connection presents,
// for a tool that connects without a Bus; a URL's user:password needs no
// option.
func ClientAuth(cfg Config) ([]nats.Option, error) { return clientAuth(cfg) }

func clientAuth(cfg Config) ([]nats.Option, error) {
	var opts []nats.Option
	tc, err := clientTLS(cfg.TLSCA, cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	if cfg.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("bus: nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.User != "" || cfg.Password != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.CredsFile != "" {
		if _, err := os.Stat(cfg.CredsFile); err != nil {
			return nil, fmt.Errorf("bus: creds: %w", err)
		}
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	return opts, nil
}

func (b *Bus) setErr(err error) {
	b.mu.Lock()
	b.lastErr = err
	b.mu.Unlock()
}

// fit scales the topology's bounds to a store limit, and says so.
func (b *Bus) fit(maxStore, maxMemory int64, whose string) {
	want, _ := b.Topology.StoreBytes()
	t, changed := b.Topology.Fit(maxStore, maxMemory)
	if !changed {
		return
	}
	got, _ := t.StoreBytes()
	b.Topology = t
	b.log.Warn("stream bounds scaled down to fit the store", "of", whose, "max_store", maxStore, "max_memory", maxMemory,
		"declared_bytes", want, "fitted_bytes", got)
}

// Ensure waits for the connection and applies the topology, logging each
// difference from the declaration that it kept or corrected.
func (b *Bus) Ensure(ctx context.Context) error {
	if err := b.waitConnected(ctx); err != nil {
		return err
	}
	if b.role != "" && b.role != RoleAdmin {
		if err := verifyWithRetry(ctx, b.JS, b.Topology, b.log); err != nil {
			return err
		}
		b.mu.Lock()
		b.ensured = true
		b.mu.Unlock()
		return nil
	}
	if b.server == nil {
		// An account with a storage limit refuses streams whose bounds
		// exceed it; each replica counts.
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		info, err := b.JS.AccountInfo(actx)
		cancel()
		if err == nil && (info.Limits.MaxStore > 0 || info.Limits.MaxMemory > 0) {
			b.fit(info.Limits.MaxStore/int64(b.replicas), info.Limits.MaxMemory/int64(b.replicas), "account")
		}
	}
	if err := ensureWithRetry(ctx, b.NC, b.JS, b.Topology, b.log); err != nil {
		return err
	}
	b.mu.Lock()
	b.ensured = true
	b.mu.Unlock()
	return nil
}

// waitConnected blocks until the connection is up; the attempts log their
// own failures.
func (b *Bus) waitConnected(ctx context.Context) error {
	for !b.NC.IsConnected() {
		if b.NC.IsClosed() {
			return fmt.Errorf("bus: connection to %s closed", b.target)
		}
		select {
		case <-ctx.Done():
			b.mu.Lock()
			last := b.lastErr
			b.mu.Unlock()
			return fmt.Errorf("bus: not connected to %s: %w", b.target, errors.Join(last, ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// ensureWithRetry waits for JetStream to answer (an external cluster may
// still be electing its meta leader) and then applies the topology.
func ensureWithRetry(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, topo streams.Topology, log *slog.Logger) error {
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
		log.Warn("topology not ensured yet, retrying", "err", err, "in", delay, "connected", nc.IsConnected())
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// verifyWithRetry waits until every declared stream and bucket exists: a
// role's user may not create them (see Permissions), the admin's does
// (cryptostream topology), and the roles may start first.
func verifyWithRetry(ctx context.Context, js jetstream.JetStream, topo streams.Topology, log *slog.Logger) error {
	delay := 250 * time.Millisecond
	for {
		missing, err := missingStreams(ctx, js, topo)
		if err == nil && len(missing) == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("bus: verify topology: missing %v: %w", missing, errors.Join(err, ctx.Err()))
		}
		log.Warn("topology not applied yet: waiting for the admin's cryptostream topology", "missing", missing, "err", err, "in", delay)
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// missingStreams lists the declared streams, buckets and object stores
// that do not exist, from the names alone (every role may list them).
func missingStreams(ctx context.Context, js jetstream.JetStream, topo streams.Topology) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	present := map[string]bool{}
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		present[n] = true
	}
	if err := names.Err(); err != nil {
		return nil, fmt.Errorf("jetstream: list streams: %w", err)
	}
	var missing []string
	for _, n := range topo.StreamNames() {
		if !present[n] {
			missing = append(missing, n)
		}
	}
	return missing, nil
}

func startEmbedded(cfg Config, pub string) (*server.Server, error) {
	opts, err := embeddedOptions(cfg, pub)
	if err != nil {
		return nil, err
	}
	stored, err := checkStoreBeforeStart(cfg.DataDir, opts.JetStreamKey)
	if err != nil {
		return nil, err
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
	if err := checkStoreAfterStart(s, stored, opts.JetStreamKey != ""); err != nil {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, err
	}
	return s, nil
}

// embeddedOptions are the embedded server's options: JetStream on the data
// dir, and one client identity, the NKey pub, on every listener. It
// refuses a listener off loopback with no credential.
func embeddedOptions(cfg Config, pub string) (*server.Options, error) {
	opts := &server.Options{
		ServerName:        "cryptostream",
		JetStream:         true,
		JetStreamMaxStore: cfg.MaxStore,
		// nats-server keeps its store in a "jetstream" folder under StoreDir.
		StoreDir: cfg.DataDir,
		NoSigs:   true,
		NoLog:    true,
		Host:     "127.0.0.1",
		Port:     server.RANDOM_PORT,
	}
	if pub != "" {
		opts.Nkeys = []*server.NkeyUser{{Nkey: pub}}
	}
	if cfg.DataKeyFile != "" {
		key, err := readDataKey(cfg.DataKeyFile)
		if err != nil {
			return nil, err
		}
		// ChaCha20-Poly1305, the server's default: as strong as AES-GCM
		// and fast without AES instructions.
		opts.JetStreamKey, opts.JetStreamCipher = key, server.ChaCha
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
	if cfg.ListenTLSCert != "" || cfg.ListenTLSKey != "" || cfg.ListenTLSCA != "" {
		tc, err := listenTLS(cfg.ListenTLSCert, cfg.ListenTLSKey, cfg.ListenTLSCA)
		if err != nil {
			return nil, err
		}
		// TLS only: a plain client is refused at its INFO. The in-process
		// connection is exempt (the server offers it TLS, not requires it).
		opts.TLS, opts.TLSVerify, opts.TLSConfig = true, cfg.ListenTLSCA != "", tc
	}
	if len(opts.Nkeys) == 0 && !loopback(opts.Host) {
		return nil, fmt.Errorf("bus: --nats-listen %s is not loopback: refusing to listen without credentials", cfg.Listen)
	}
	return opts, nil
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

// Ready reports whether the process can work: connected, the topology
// applied, JetStream answering, and every declared stream present. A
// stream deleted under a running system (stream rm AUDIT) makes it not
// ready rather than a log line.
func (b *Bus) Ready(ctx context.Context) error {
	b.mu.Lock()
	last, ensured := b.lastErr, b.ensured
	b.mu.Unlock()
	if !b.NC.IsConnected() {
		if last != nil {
			return fmt.Errorf("connecting to %s: last attempt: %w", b.target, last)
		}
		return fmt.Errorf("connecting to %s", b.target)
	}
	if !ensured {
		return errors.New("applying the topology")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := b.JS.AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	missing, err := missingStreams(ctx, b.JS, b.Topology)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("streams missing: %s", strings.Join(missing, ", "))
	}
	return nil
}

// Close drains the connection, so that pending publishes and acks are
// flushed, and then stops the embedded server.
func (b *Bus) Close() {
	if b.urlFile != "" {
		_ = os.Remove(b.urlFile)
	}
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
	b.lock.release()
	b.lock = nil
}

// redactURL hides credentials: a URL may carry user:password.
func redactURL(raw string) string {
	if raw == "" {
		return "embedded"
	}
	return RedactURLs(raw)
}

// RedactURLs hides the password of each URL of a comma-separated list (a
// cluster's seed list): url.Parse of the whole list would take the later
// URLs for a path and leave their passwords in.
func RedactURLs(raw string) string {
	if raw == "" {
		return ""
	}
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.Scheme == "" {
			parts[i] = "(redacted)"
			continue
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}
