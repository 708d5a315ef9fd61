package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"cryptostream/bus"
)

// env is what a command reads from its surroundings, so tests can give
// their own.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	isTerminal     bool
}

func newEnv() *env {
	return &env{
		stdout:     os.Stdout,
		stderr:     os.Stderr,
		getenv:     os.Getenv,
		isTerminal: term.IsTerminal(int(os.Stderr.Fd())),
	}
}

// flagSet is a flag.FlagSet whose defaults come from the environment, so that
// the precedence is flag > env > default and --help names the variable.
type flagSet struct {
	*flag.FlagSet
	env *env
	// errs collects environment values that do not parse, reported by parse
	// rather than silently replaced by the default.
	errs []error
}

func newFlagSet(name, synopsis string, e *env) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), env: e}
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage: cryptostream %s [flags]\n\n%s\n\nFlags:\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}

func (fs *flagSet) envUsage(envName, usage string) string {
	if envName == "" {
		return usage
	}
	return usage + " (env " + envName + ")"
}

func (fs *flagSet) stringVar(p *string, name, envName, def, usage string) {
	if v := fs.lookup(envName); v != "" {
		def = v
	}
	fs.StringVar(p, name, def, fs.envUsage(envName, usage))
}

func (fs *flagSet) boolVar(p *bool, name, envName string, def bool, usage string) {
	if v := fs.lookup(envName); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Errorf("%s=%q: %w", envName, v, err))
		} else {
			def = b
		}
	}
	fs.BoolVar(p, name, def, fs.envUsage(envName, usage))
}

func (fs *flagSet) intVar(p *int, name, envName string, def int, usage string) {
	if v := fs.lookup(envName); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Errorf("%s=%q: %w", envName, v, err))
		} else {
			def = n
		}
	}
	fs.IntVar(p, name, def, fs.envUsage(envName, usage))
}

func (fs *flagSet) float64Var(p *float64, name, envName string, def float64, usage string) {
	if v := fs.lookup(envName); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Errorf("%s=%q: %w", envName, v, err))
		} else {
			def = f
		}
	}
	fs.Float64Var(p, name, def, fs.envUsage(envName, usage))
}

func (fs *flagSet) durationVar(p *time.Duration, name, envName string, def time.Duration, usage string) {
	if v := fs.lookup(envName); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fs.errs = append(fs.errs, fmt.Errorf("%s=%q: %w", envName, v, err))
		} else {
			def = d
		}
	}
	fs.DurationVar(p, name, def, fs.envUsage(envName, usage))
}

func (fs *flagSet) lookup(envName string) string {
	if envName == "" {
		return ""
	}
	return fs.env.getenv(envName)
}

func (fs *flagSet) parse(args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(fs.errs) > 0 {
		return fmt.Errorf("environment: %w", errors.Join(fs.errs...))
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	return nil
}

// parseInterleaved parses flags anywhere among the positional arguments
// (`user add bob --role admin` as well as `user add --role admin bob`) and
// returns the positional ones in order; "--" ends the flags.
func (fs *flagSet) parseInterleaved(args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// flag stops at "--" too; whatever follows it is positional.
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(fs.errs) > 0 {
		return nil, fmt.Errorf("environment: %w", errors.Join(fs.errs...))
	}
	return pos, nil
}

// commonConfig is what every command that reaches NATS takes: registered
// once here, so that a setting such as --replicas means the same in every
// role and tool.
type commonConfig struct {
	NATSURL string
	// NATSListen exposes the embedded server on host:port.
	NATSListen string
	// NATSListenTLSCert, NATSListenTLSKey and NATSListenTLSCA put that
	// listener on TLS (see bus.Config).
	NATSListenTLSCert, NATSListenTLSKey, NATSListenTLSCA string
	// Replicas of every stream and bucket; applying the topology never
	// lowers what a stream already has (see streams.Ensure).
	Replicas int
	// NKeyFile and CredsFile are the NATS credential (see bus.Config).
	NKeyFile     string
	CredsFile    string
	NATSUser     string
	NATSPassword string
	// NATSRole is the role whose NATS user the credential is (see
	// bus.Permissions); empty for a user with every permission.
	NATSRole string
	// NATSTLSCA, NATSTLSCert and NATSTLSKey are the TLS of the
	// connection to --nats-url (see bus.Config).
	NATSTLSCA   string
	NATSTLSCert string
	NATSTLSKey  string
	// DataKeyFile encrypts the embedded server's store at rest.
	DataKeyFile string
	// NATSMaxStore bounds the embedded server's file store ("20G").
	NATSMaxStore string
	DataDir      string
	HTTPAddr     string
	MetricsAddr  string
	// TLSCert and TLSKey put the HTTP server (--http-addr) on TLS.
	TLSCert, TLSKey string
	DatabaseURL     string
	LogFormat       string
	LogLevel        string
	ShutdownTimeout time.Duration
	// CPUProfile is a file the process writes its CPU profile to, from
	// start to shutdown (load tests).
	CPUProfile string
}

// register registers the common flags. serves says what the HTTP server
// serves, for its help; empty (a tool) registers no HTTP flag at all.
func (c *commonConfig) register(fs *flagSet, defaultHTTPAddr, serves string) {
	fs.stringVar(&c.NATSURL, "nats-url", "NATS_URL", "", "NATS server or cluster URL(s), comma-separated; empty runs an embedded server where the role allows it")
	fs.stringVar(&c.NATSListen, "nats-listen", "NATS_LISTEN", "", "host:port of the embedded NATS, for the nats CLI (empty: a random loopback port, published in <data-dir>/nats.url); every client needs the credential (--nats-nkey)")
	fs.stringVar(&c.NATSListenTLSCert, "nats-listen-tls-cert", "NATS_LISTEN_TLS_CERT", "", "certificate (PEM) of the embedded NATS's listener: clients from outside (nats CLI, nats bench, other roles) then connect over tls:// only (nats-auth --tls-hosts writes one under server/)")
	fs.stringVar(&c.NATSListenTLSKey, "nats-listen-tls-key", "NATS_LISTEN_TLS_KEY", "", "key (PEM, mode 0600) of --nats-listen-tls-cert")
	fs.stringVar(&c.NATSListenTLSCA, "nats-listen-tls-ca", "NATS_LISTEN_TLS_CA", "", "CA (PEM) that every client of the embedded NATS's listener must present a certificate of (mutual TLS); empty: clients present none")
	fs.intVar(&c.Replicas, "replicas", "NATS_REPLICAS", 1, "replicas of every stream and bucket (3 on a cluster); a stream that already has more keeps them")
	fs.stringVar(&c.NKeyFile, "nats-nkey", "NATS_NKEY_FILE", "", "NKey user seed file: the key an embedded server admits (empty: generated once into <data-dir>/nats.nkey, 0600) or the key presented to --nats-url")
	fs.stringVar(&c.CredsFile, "nats-creds", "NATS_CREDS_FILE", "", "JWT credentials file presented to --nats-url (a URL may carry user:password instead)")
	fs.stringVar(&c.NATSUser, "nats-user", "NATS_USER", "", "user presented to --nats-url")
	fs.stringVar(&c.NATSPassword, "nats-password", "NATS_PASSWORD", "", "password presented to --nats-url (prefer the environment variable: a flag shows in ps)")
	fs.stringVar(&c.NATSRole, "nats-role", "NATS_ROLE", "", "the role whose NATS user --nats-url is given (from cryptostream nats-auth): the process then verifies the topology instead of applying it and uses that role's inbox; empty: a user with every permission")
	fs.stringVar(&c.NATSTLSCA, "nats-tls-ca", "NATS_TLS_CA", "", "CA certificate (PEM) that --nats-url's servers are verified against (empty: the system roots); setting any --nats-tls-* turns TLS on")
	fs.stringVar(&c.NATSTLSCert, "nats-tls-cert", "NATS_TLS_CERT", "", "client certificate (PEM) presented to --nats-url's servers when they verify clients (nats-auth writes one per role)")
	fs.stringVar(&c.NATSTLSKey, "nats-tls-key", "NATS_TLS_KEY", "", "key (PEM, mode 0600) of --nats-tls-cert")
	fs.stringVar(&c.DataKeyFile, "data-key-file", "DATA_KEY_FILE", "", "file holding the key (at least 32 characters, mode 0600) that encrypts the embedded server's JetStream store at rest; a store written with a key opens only with it. An external cluster encrypts its own (docs/operations.md)")
	fs.stringVar(&c.NATSMaxStore, "nats-max-store", "NATS_MAX_STORE", "", "bound on the embedded server's file store, e.g. 20G (empty: three quarters of the free disk); the streams' MaxBytes are fitted to it")
	fs.stringVar(&c.DataDir, "data-dir", "DATA_DIR", "./data", "directory for the embedded JetStream store and generated secrets")
	if serves != "" {
		fs.stringVar(&c.HTTPAddr, "http-addr", "HTTP_ADDR", defaultHTTPAddr, "address of the HTTP server: "+serves)
		fs.stringVar(&c.TLSCert, "tls-cert", "TLS_CERT", "", "certificate (PEM, with its chain) of the HTTP server: --http-addr then serves HTTPS only")
		fs.stringVar(&c.TLSKey, "tls-key", "TLS_KEY", "", "key (PEM) of --tls-cert")
		fs.stringVar(&c.MetricsAddr, "metrics-addr", "METRICS_ADDR", "", "serve /metrics on this address (a private one) instead of on --http-addr; empty keeps it on --http-addr")
		fs.stringVar(&c.CPUProfile, "cpu-profile", "", "", "write a CPU profile of the process (go tool pprof) to this file, from start to shutdown")
	}
	fs.stringVar(&c.DatabaseURL, "database-url", "DATABASE_URL", "", "PostgreSQL URL of the SQL read model; empty reads history from JetStream")
	fs.stringVar(&c.LogFormat, "log-format", "LOG_FORMAT", "auto", "log format: text, json, or auto (text on a terminal, json otherwise)")
	fs.stringVar(&c.LogLevel, "log-level", "LOG_LEVEL", "info", "log level: debug, info, warn or error")
	fs.durationVar(&c.ShutdownTimeout, "shutdown-timeout", "SHUTDOWN_TIMEOUT", 20*time.Second, "bound on a clean shutdown; past it the process exits non-zero")
}

func (c *commonConfig) validate() error {
	switch c.LogFormat {
	case "auto", "text", "json":
	default:
		return fmt.Errorf("--log-format %q: want text, json or auto", c.LogFormat)
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("--log-level %q: %w", c.LogLevel, err)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout %s: must be positive", c.ShutdownTimeout)
	}
	if c.DatabaseURL != "" {
		if _, err := url.Parse(c.DatabaseURL); err != nil {
			return fmt.Errorf("--database-url: %w", err)
		}
	}
	if c.NATSURL != "" {
		if err := bus.ValidateURL(c.NATSURL); err != nil {
			return fmt.Errorf("--nats-url: %w", err)
		}
	}
	if (c.CredsFile != "" || c.NATSUser != "" || c.NATSPassword != "") && c.NATSURL == "" {
		return errors.New("--nats-creds, --nats-user and --nats-password authenticate to --nats-url; the embedded server takes --nats-nkey")
	}
	if c.NATSRole != "" {
		if c.NATSURL == "" {
			return errors.New("--nats-role names the user presented to --nats-url; the embedded server has one user")
		}
		if !bus.ValidRole(c.NATSRole) {
			return fmt.Errorf("--nats-role %q: want one of %v", c.NATSRole, bus.Roles())
		}
	}
	if (c.NATSTLSCA != "" || c.NATSTLSCert != "" || c.NATSTLSKey != "") && c.NATSURL == "" {
		return errors.New("--nats-tls-ca, --nats-tls-cert and --nats-tls-key secure the connection to --nats-url; the embedded server is reached in process")
	}
	if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
		return errors.New("--nats-tls-cert and --nats-tls-key go together")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if c.DataKeyFile != "" && c.NATSURL != "" {
		return errors.New("--data-key-file encrypts the embedded server's store; an external cluster encrypts its own (jetstream { cipher, key } in each server's config)")
	}
	if _, err := parseBytes(c.NATSMaxStore); err != nil {
		return fmt.Errorf("--nats-max-store: %w", err)
	}
	if (c.NATSListenTLSCert != "" || c.NATSListenTLSKey != "" || c.NATSListenTLSCA != "") && c.NATSURL != "" {
		return errors.New("--nats-listen-tls-cert, --nats-listen-tls-key and --nats-listen-tls-ca secure the embedded server's listener; with --nats-url there is none")
	}
	if (c.NATSListenTLSCert == "") != (c.NATSListenTLSKey == "") || (c.NATSListenTLSCA != "" && c.NATSListenTLSCert == "") {
		return errors.New("--nats-listen-tls-cert and --nats-listen-tls-key go together, and --nats-listen-tls-ca needs them")
	}
	if c.NATSListen != "" && c.NATSURL != "" {
		return errors.New("--nats-listen exposes the embedded server and makes no sense with --nats-url")
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("--replicas %d: want 1 to 5", c.Replicas)
	}
	return nil
}

// busConfig is the bus this configuration asks for, named for the server's
// connection list.
func (c *commonConfig) busConfig(name string) bus.Config {
	maxStore, _ := parseBytes(c.NATSMaxStore) // validated before
	return bus.Config{URL: c.NATSURL, DataDir: c.DataDir, Listen: c.NATSListen, Replicas: c.Replicas, Name: name,
		NKeyFile: c.NKeyFile, CredsFile: c.CredsFile, User: c.NATSUser, Password: c.NATSPassword, MaxStore: maxStore,
		Role: c.NATSRole, TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey, DataKeyFile: c.DataKeyFile,
		ListenTLSCert: c.NATSListenTLSCert, ListenTLSKey: c.NATSListenTLSKey, ListenTLSCA: c.NATSListenTLSCA}
}

// parseBytes reads a size such as 512M or 20G (powers of 1024); empty is 0.
func parseBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	case "T":
		mult = 1 << 40
	}
	num := s
	if mult > 1 {
		num = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q: want a positive size such as 512M or 20G", s)
	}
	return n * mult, nil
}

// toolBusConfig is busConfig for a tool (user, import): when another
// process holds the data dir, the tool reaches that process through its NATS
// instead of opening the store a second time.
func (c *commonConfig) toolBusConfig(name string) bus.Config {
	bc := c.busConfig(name)
	bc.Attach = true
	return bc
}

// LogValue logs the configuration with credentials redacted.
func (c commonConfig) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("nats_url", bus.RedactURLs(c.NATSURL)),
		slog.String("nats_user", c.NATSUser),
		slog.Bool("nats_password_set", c.NATSPassword != ""),
		slog.String("nats_role", c.NATSRole),
		slog.String("nats_listen", c.NATSListen),
		slog.Bool("nats_listen_tls", c.NATSListenTLSCert != ""),
		slog.Bool("nats_listen_mtls", c.NATSListenTLSCA != ""),
		slog.Int("replicas", c.Replicas),
		slog.String("nats_nkey", c.NKeyFile),
		slog.String("nats_creds", c.CredsFile),
		slog.String("nats_tls_ca", c.NATSTLSCA),
		slog.String("nats_tls_cert", c.NATSTLSCert),
		slog.String("nats_tls_key", c.NATSTLSKey),
		slog.String("data_key_file", c.DataKeyFile),
		slog.String("nats_max_store", c.NATSMaxStore),
		slog.String("data_dir", c.DataDir),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("metrics_addr", c.MetricsAddr),
		slog.String("tls_cert", c.TLSCert),
		slog.String("database_url", redact(c.DatabaseURL)),
		slog.String("log_format", c.LogFormat),
		slog.String("log_level", c.LogLevel),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
	)
}

// redact hides the password of a URL; a value that is not a URL is hidden
// whole, since it may be a key=value DSN with a password in it.
func redact(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return "(redacted)"
	}
	return u.Redacted()
}

func (c *commonConfig) logger(e *env) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.LogLevel)) // validated before
	opts := &slog.HandlerOptions{Level: lvl}
	if c.LogFormat == "json" || (c.LogFormat == "auto" && !e.isTerminal) {
		return slog.New(slog.NewJSONHandler(e.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(e.stderr, opts))
}
