package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"cryptostream/bus"
	"cryptostream/registry"
	"cryptostream/streams"
)

// trainConfig is the configuration of `train`: one job, queued like
// POST /prediction/train queues it.
type trainConfig struct {
	NATSURL  string
	NKeyFile string
	Creds    string
	Kind     string
	Symbol   string
	Interval string
	Horizon  int
	Features string
	Wait     bool
	Timeout  time.Duration
	// TLSCA, TLSCert and TLSKey are the TLS of the connection (see
	// bus.Config), as for every role.
	TLSCA, TLSCert, TLSKey string
}

func cmdTrain(ctx context.Context, args []string, e *env) error {
	var cfg trainConfig
	fs := newFlagSet("train", "Queues a train (or score, predict) job on JOBS, as POST /prediction/train does,\nand with --wait waits for its result and prints the job status as JSON.", e)
	fs.stringVar(&cfg.NATSURL, "nats-url", "NATS_URL", "", "NATS URL of the running system (run it with --nats-listen to reach an embedded one)")
	fs.stringVar(&cfg.NKeyFile, "nats-nkey", "NATS_NKEY_FILE", "", "NKey user seed file to present (run's is <data-dir>/nats.nkey)")
	fs.stringVar(&cfg.Creds, "nats-creds", "NATS_CREDS_FILE", "", "JWT credentials file to present")
	fs.stringVar(&cfg.TLSCA, "nats-tls-ca", "NATS_TLS_CA", "", "CA certificate (PEM) the NATS servers are verified against")
	fs.stringVar(&cfg.TLSCert, "nats-tls-cert", "NATS_TLS_CERT", "", "client certificate (PEM) for servers that verify clients")
	fs.stringVar(&cfg.TLSKey, "nats-tls-key", "NATS_TLS_KEY", "", "key (PEM) of --nats-tls-cert")
	fs.stringVar(&cfg.Kind, "kind", "", "train", "job kind: train, score or predict")
	fs.stringVar(&cfg.Symbol, "symbol", "", "BTC/USD", "pair")
	fs.stringVar(&cfg.Interval, "interval", "", "1m", "candle interval")
	fs.intVar(&cfg.Horizon, "horizon", "", 0, "intervals ahead (0: the trainer's default)")
	fs.stringVar(&cfg.Features, "features", "", "", "comma-separated feature names (empty: all)")
	fs.boolVar(&cfg.Wait, "wait", "", true, "wait for the job to finish and print its status")
	fs.durationVar(&cfg.Timeout, "timeout", "", 5*time.Minute, "bound on --wait (0: wait as long as the job takes)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if cfg.NATSURL == "" {
		return errors.New("--nats-url is required")
	}
	iv, err := streams.ParseInterval(cfg.Interval)
	if err != nil {
		return err
	}
	sym, err := streams.NormalizeSymbol(cfg.Symbol)
	if err != nil {
		return err
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id)
	job := streams.Job{ID: "cli-" + hex.EncodeToString(id), Kind: streams.JobKind(cfg.Kind), Symbol: sym, Interval: iv,
		Params: map[string]string{}, RequestedBy: "cli", RequestedAt: time.Now().UTC()}
	if cfg.Horizon > 0 {
		job.Params["horizon"] = strconv.Itoa(cfg.Horizon)
	}
	if cfg.Features != "" {
		job.Params["features"] = cfg.Features
	}
	if err := bus.ValidateURL(cfg.NATSURL); err != nil {
		return fmt.Errorf("--nats-url: %w", err)
	}
	auth, err := bus.ClientAuth(bus.Config{NKeyFile: cfg.NKeyFile, CredsFile: cfg.Creds, TLSCA: cfg.TLSCA, TLSCert: cfg.TLSCert, TLSKey: cfg.TLSKey})
	if err != nil {
		return err
	}
	nc, err := nats.Connect(cfg.NATSURL, append(auth, nats.Name("cryptostream-train"))...)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	jobs, err := registry.OpenJobs(ctx, js, nil)
	if err != nil {
		return err
	}
	if err := jobs.Submit(ctx, &job); err != nil {
		return err
	}
	fmt.Fprintln(e.stderr, "queued job", job.ID)
	if !cfg.Wait {
		return nil
	}
	wctx, cancel := ctx, context.CancelFunc(func() {})
	if cfg.Timeout > 0 {
		wctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
	}
	defer cancel()
	st, err := jobs.Wait(wctx, job.ID)
	if err != nil {
		return err
	}
	out, _ := json.MarshalIndent(st, "", "  ")
	fmt.Fprintln(e.stdout, string(out))
	if st.State == streams.JobFailed {
		return fmt.Errorf("job %s failed: %s", job.ID, st.Error)
	}
	return nil
}
