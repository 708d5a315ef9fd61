package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"cryptostream/bus"
	"cryptostream/gateway/auth"
	"cryptostream/streams"
)

const userSynopsis = `Manages users in the users bucket, for bootstrap and recovery.

  cryptostream user add <name> [--role user|admin] [--email E] [--full-name N] [--password-stdin]
  cryptostream user list
  cryptostream user set-role <name> user|admin
  cryptostream user passwd <name> [--password-stdin]
  cryptostream user delete <name>

Without --password-stdin a password is generated and printed once. With no
--nats-url it works on --data-dir: through the NATS of the 'run' that holds
it when one does (with its credential, <data-dir>/nats.nkey), on the
embedded store otherwise. With --nats-url it works on that server.`

type userConfig struct {
	commonConfig
	Role          string
	Email         string
	FullName      string
	PasswordStdin bool
	BcryptCost    int
}

// stdin is where --password-stdin reads; tests replace it.
var stdin io.Reader = os.Stdin

func cmdUser(ctx context.Context, args []string, e *env) error {
	var cfg userConfig
	fs := newFlagSet("user", userSynopsis, e)
	cfg.register(fs, "", "")
	fs.StringVar(&cfg.Role, "role", "user", "role of a new user: user or admin")
	fs.StringVar(&cfg.Email, "email", "", "email of a new user")
	fs.StringVar(&cfg.FullName, "full-name", "", "full name of a new user")
	fs.BoolVar(&cfg.PasswordStdin, "password-stdin", false, "read the password from the first line of standard input")
	fs.intVar(&cfg.BcryptCost, "bcrypt-cost", "BCRYPT_COST", auth.DefaultCost, "bcrypt cost of new password hashes")
	pos, err := fs.parseInterleaved(args)
	if err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return errors.New("user: an action is required (add, list, set-role, passwd, delete)")
	}
	action, pos := pos[0], pos[1:]
	want := map[string]int{"add": 1, "list": 0, "set-role": 2, "passwd": 1, "delete": 1}
	n, ok := want[action]
	if !ok {
		return fmt.Errorf("user: unknown action %q", action)
	}
	if len(pos) != n {
		return fmt.Errorf("user %s: want %d argument(s), got %q", action, n, pos)
	}
	log := cfg.logger(e)
	b, err := bus.Open(ctx, cfg.toolBusConfig("cryptostream-user"), log)
	if err != nil {
		return err
	}
	defer b.Close()
	kv, err := b.JS.KeyValue(ctx, streams.BucketUsers)
	if err != nil {
		return fmt.Errorf("user: open users bucket: %w", err)
	}
	sh := &auth.Shell{Users: auth.NewUsers(kv, nil), Audit: b.JS, Cost: cfg.BcryptCost,
		OnAuditError: func(action string, err error) { log.Error("audit event lost", "action", action, "err", err) }}
	password := func() (pw string, generated bool, err error) {
		if !cfg.PasswordStdin {
			return auth.NewID()[:24], true, nil
		}
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", false, fmt.Errorf("user: read password: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), false, nil
	}
	out := e.stdout
	switch action {
	case "add":
		pw, gen, err := password()
		if err != nil {
			return err
		}
		role := streams.Role(cfg.Role)
		if err := sh.Add(ctx, streams.User{Username: pos[0], Role: role, Email: cfg.Email, FullName: cfg.FullName}, pw); err != nil {
			return fmt.Errorf("user add: %w", err)
		}
		if gen {
			fmt.Fprintf(out, "created %s (%s) with password %s\n", pos[0], role, pw)
		} else {
			fmt.Fprintf(out, "created %s (%s)\n", pos[0], role)
		}
	case "list":
		all, err := sh.Users.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USERNAME\tROLE\tEMAIL\tCREATED")
		for _, u := range all {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Username, u.Role, u.Email, u.CreatedAt.Format(time.RFC3339))
		}
		return tw.Flush()
	case "set-role":
		role := streams.Role(pos[1])
		if err := sh.SetRole(ctx, pos[0], role); err != nil {
			return fmt.Errorf("user set-role: %w", err)
		}
		fmt.Fprintf(out, "%s is now %s\n", pos[0], role)
	case "passwd":
		pw, gen, err := password()
		if err != nil {
			return err
		}
		if err := sh.SetPassword(ctx, pos[0], pw); err != nil {
			return fmt.Errorf("user passwd: %w", err)
		}
		if gen {
			fmt.Fprintf(out, "password of %s set to %s\n", pos[0], pw)
		} else {
			fmt.Fprintf(out, "password of %s set\n", pos[0])
		}
	case "delete":
		if err := sh.Delete(ctx, pos[0]); err != nil {
			return fmt.Errorf("user delete: %w", err)
		}
		fmt.Fprintf(out, "deleted %s\n", pos[0])
	}
	return nil
}
