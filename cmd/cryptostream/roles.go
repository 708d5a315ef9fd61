package main

import (
	"context"
	"log/slog"
)

// role is one long-running part of the system. `run` starts every role in
// one process and `cryptostream <role>` starts one alone; both parse their
// flags and start through the same code (parseRoleConfig, startSystem), so a
// role never has a start-up path of its own.
type role struct {
	name    string
	summary string
	// synopsis heads the role's --help when it runs alone.
	synopsis string
	// httpAddr is the role's default HTTP address when it runs alone: each
	// role has its own, so that several run side by side on one host.
	httpAddr string
	// flags registers the role's own settings into cfg. alone is true for
	// the standalone command, which may take flags that make no sense in
	// run (sink --rebuild).
	flags func(fs *flagSet, cfg *runConfig, alone bool)
	// check validates the role's settings after parsing.
	check func(fs *flagSet, cfg *runConfig) error
	// add builds the role's workers into s. Roles are added in table order.
	add func(ctx context.Context, s *system, cfg *runConfig) error
	// oneShot, when set and it reports handled, replaces the long-running
	// start of the standalone command (sink --rebuild).
	oneShot func(ctx context.Context, cfg *runConfig, e *env, log *slog.Logger) (handled bool, err error)
}

// roles lists every role in the order run adds them: ingest first (with
// --demo it decides which Kraken the gateway validates assets against),
// then the gateway and the sink, then the prediction chain.
func roles() []role {
	return []role{
		{
			name: "ingest", summary: "the Kraken ingester alone: WebSocket candles into MARKET and TICKS, gaps healed from REST",
			synopsis: "Ingests Kraken OHLC candles into MARKET (final candles) and TICKS (running ones),\nhealing gaps from REST after every reconnect.",
			httpAddr: ":8085",
			flags:    func(fs *flagSet, cfg *runConfig, _ bool) { cfg.Ingest.register(fs) },
			check:    func(_ *flagSet, cfg *runConfig) error { return cfg.Ingest.validate() },
			add:      addIngest,
		},
		{
			name: "gateway", summary: "the REST API, websocket hub and OpenAPI document",
			synopsis: "Serves the REST API, the websocket hub and the OpenAPI document against\nNATS (--nats-url; an embedded server under --data-dir when empty).",
			httpAddr: ":8080",
			flags:    func(fs *flagSet, cfg *runConfig, _ bool) { cfg.Gateway.register(fs) },
			check:    func(fs *flagSet, cfg *runConfig) error { return cfg.Gateway.validate(fs) },
			add:      addGateway,
		},
		{
			name: "sink", summary: "projects the streams and buckets into PostgreSQL; --rebuild replays them",
			synopsis: "Projects MARKET, PREDICTIONS, ALERTS, AUDIT and the assets, users and\nmodel-registry buckets into PostgreSQL (--database-url). With --rebuild it\ndrops the projection, replays every stream from its start with a progress\nbar and exits; stop the running sinks first.",
			httpAddr: ":8084",
			flags:    func(fs *flagSet, cfg *runConfig, alone bool) { cfg.Sink.register(fs, alone) },
			check:    checkSink,
			add:      addSink,
			oneShot:  rebuildOneShot,
		},
		{
			name: "features", summary: "candles -> feature vectors (MARKET -> FEATURES)",
			synopsis: "Consumes closed candles from MARKET and publishes one feature vector per\ncandle to FEATURES. Instances beyond the first are standbys (pinned consumer).",
			httpAddr: ":8081",
			add:      addFeatures,
		},
		{
			name: "trainer", summary: "trains and promotes models on jobs and on a schedule",
			synopsis: "Trains linear models on FEATURES on train jobs from JOBS and on a schedule,\nstores them in the model registry and promotes champions.",
			httpAddr: ":8082",
			flags:    func(fs *flagSet, cfg *runConfig, _ bool) { cfg.Trainer.register(fs) },
			check:    func(_ *flagSet, cfg *runConfig) error { return cfg.Trainer.validate() },
			add:      addTrainer,
		},
		{
			name: "predictor", summary: "feature vectors -> a scored forecast per candle (champion or no-change, with intervals)",
			synopsis: "Publishes a forecast for every feature vector to PREDICTIONS at each horizon:\nthe champion's point forecast, or no-change, with intervals from the\nvolatility model, and scores each when its target arrives.",
			httpAddr: ":8083",
			flags:    func(fs *flagSet, cfg *runConfig, _ bool) { cfg.Predictor.register(fs) },
			check:    func(_ *flagSet, cfg *runConfig) error { return cfg.Predictor.validate() },
			add:      addPredictor,
		},
		{
			name: "notifier", summary: "alert rules over candles, ticks, predictions and audit events -> ALERTS, webhooks",
			synopsis: "Evaluates the alert rules (the alert-rules bucket and the system set from\nflags) over MARKET, TICKS, PREDICTIONS and AUDIT, publishes each firing once\nto ALERTS and delivers signed webhooks. Instances beyond the first are\nstandbys (pinned consumers).",
			httpAddr: ":8086",
			flags:    func(fs *flagSet, cfg *runConfig, _ bool) { cfg.Notifier.register(fs) },
			check:    func(fs *flagSet, cfg *runConfig) error { return cfg.Notifier.validate(fs, cfg) },
			add:      addNotifier,
		},
	}
}

// roleCommand is the standalone command of r.
func roleCommand(r role) command {
	return command{r.name, r.summary, func(ctx context.Context, args []string, e *env) error {
		return cmdRole(ctx, args, e, r)
	}}
}

// cmdRole runs one role alone: run's composition limited to it, against
// --nats-url (or an embedded server under --data-dir).
func cmdRole(ctx context.Context, args []string, e *env, r role) error {
	cfg, err := parseRoleConfig(r.name, r.synopsis, r.httpAddr, []role{r}, args, e)
	if err != nil {
		return err
	}
	cfg.Roles = []string{r.name}
	log := cfg.logger(e)
	log.Info("starting", "command", r.name, "config", cfg)
	if r.oneShot != nil {
		if handled, err := r.oneShot(ctx, &cfg, e, log); handled {
			return err
		}
	}
	return serve(ctx, cfg, log)
}
