// Command cryptostream is the one binary of the system: every role, alone
// against an external NATS or all together on an embedded one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], newEnv())
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "cryptostream:", err)
		os.Exit(1)
	}
}

// command is one role or tool of the binary.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, env *env) error
}

// commands lists every subcommand in the order --help shows them: run, the
// roles it composes, then the tools.
func commands() []command {
	cs := []command{{"run", "everything in one process, on an embedded JetStream unless --nats-url is set", cmdRun}}
	for _, r := range roles() {
		cs = append(cs, roleCommand(r))
	}
	return append(cs,
		command{"import", "load Kraken OHLCVT / header CSV files or the last 720 REST candles into MARKET", cmdImport},
		command{"krakensim", "a Kraken-compatible WebSocket v2 + REST server replaying recorded candles", cmdKrakensim},
		command{"train", "queue a train, score or predict job and wait for its result", cmdTrain},
		command{"backtest", "replay a MARKET range through the live features and predictor code and report errors, coverage and a strategy", cmdBacktest},
		command{"replay", "republish a MARKET range into a sandbox prefix, at N times market speed, removed afterwards", cmdReplay},
		command{"evaluate", "the forecast evaluation on candle files: point, volatility and intervals, past only", cmdEvaluate},
		command{"user", "create, list and manage users from the shell", cmdUser},
		command{"nats-auth", "write a NATS user per role (NKey seeds) and the servers' auth.conf with their permissions", cmdNATSAuth},
		command{"topology", "apply the streams, buckets and consumers on --nats-url with the admin's user, and exit", cmdTopology},
		command{"probe", "GET a URL and exit 0 on 200: the containers' health check", cmdProbe},
		command{"loadtest", "ws|rest: load a running gateway on loopback and report throughput, delay, memory and CPU", cmdLoadtest},
	)
}

func run(ctx context.Context, args []string, e *env) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.stderr)
		if len(args) == 0 {
			return errors.New("no command given")
		}
		return flag.ErrHelp
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], e)
		}
	}
	usage(e.stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprint(w, `cryptostream: live crypto prices and predictions on NATS JetStream.

Usage:
  cryptostream <command> [flags]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Every flag falls back to an environment variable, named in its help.
Run 'cryptostream <command> --help' for a command's flags.
`)
}
