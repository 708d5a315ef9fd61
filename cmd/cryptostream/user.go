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
--nats-url it opens the embedded store under --data-dir: stop 'run' first,
or point --nats-url at a running server (run --nats-listen exposes one).`

type userConfig struct {
	commonConfig
	Replicas      int
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
	cfg.register(fs, "")
	fs.intVar(&cfg.Replicas, "replicas", "NATS_REPLICAS", 1, "replicas of every stream and bucket (3 on a cluster)")
	fs.StringVar(&cfg.Role, "role", "user", "role of a new user: user or admin")
	fs.StringVar(&cfg.Email, "email", "", "email of a new user")
	fs.StringVar(&cfg.FullName, "full-name", "", "full name of a new user")
	fs.BoolVar(&cfg.PasswordStdin, "password-stdin", false, "read the password from the first line of standard input")
	fs.intVar(&cfg.BcryptCost, "bcrypt-cost", "BCRYPT_COST", auth.DefaultCost, "bcrypt cost of new password hashes")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs.Usage()
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return fs.Parse(args)
		}
		return errors.New("user: an action is required (add, list, set-role, passwd, delete)")
	}
	action := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if len(fs.errs) > 0 {
		return fmt.Errorf("environment: %w", errors.Join(fs.errs...))
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	pos := fs.Args()
	want := map[string]int{"add": 1, "list": 0, "set-role": 2, "passwd": 1, "delete": 1}
	n, ok := want[action]
	if !ok {
		return fmt.Errorf("user: unknown action %q", action)
	}
	if len(pos) != n {
		return fmt.Errorf("user %s: want %d argument(s), got %q (flags go before arguments)", action, n, pos)
	}
	log := cfg.logger(e)
	b, err := bus.Open(ctx, bus.Config{URL: cfg.NATSURL, DataDir: cfg.DataDir, Replicas: cfg.Replicas, Name: "cryptostream-user"}, log)
	if err != nil {
		return err
	}
	defer b.Close()
	kv, err := b.JS.KeyValue(ctx, streams.BucketUsers)
	if err != nil {
		return fmt.Errorf("user: open users bucket: %w", err)
	}
	users := auth.NewUsers(kv, nil)
	audit := func(action, target, detail string) {
		ev := &streams.AuditEvent{ID: auth.NewID(), Action: action, Actor: "cli", Target: target, Outcome: "ok", Detail: detail, At: time.Now().UTC()}
		if _, err := streams.Publish(ctx, b.JS, ev); err != nil {
			log.Error("audit event lost", "action", action, "err", err)
		}
	}
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
		role := streams.Role(cfg.Role)
		if role != streams.RoleUser && role != streams.RoleAdmin {
			return fmt.Errorf("user add: --role %q: want user or admin", cfg.Role)
		}
		pw, gen, err := password()
		if err != nil {
			return err
		}
		hash, err := auth.HashPassword(pw, cfg.BcryptCost)
		if err != nil {
			return fmt.Errorf("user add: %w", err)
		}
		if _, err := users.Create(ctx, streams.User{Username: pos[0], Role: role, Email: cfg.Email, FullName: cfg.FullName, PasswordHash: hash}); err != nil {
			return fmt.Errorf("user add: %w", err)
		}
		audit("auth.signup", pos[0], "created from the shell as "+string(role))
		if gen {
			fmt.Fprintf(out, "created %s (%s) with password %s\n", pos[0], role, pw)
		} else {
			fmt.Fprintf(out, "created %s (%s)\n", pos[0], role)
		}
	case "list":
		all, err := users.List(ctx)
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
		if role != streams.RoleUser && role != streams.RoleAdmin {
			return fmt.Errorf("user set-role: %q: want user or admin", pos[1])
		}
		_, err := users.Update(ctx, pos[0], func(u *streams.User) error {
			if u.Role == streams.RoleAdmin && role == streams.RoleUser {
				if n, err := users.CountAdmins(ctx); err != nil || n <= 1 {
					return errors.Join(err, auth.ErrLastAdmin)
				}
			}
			u.Role = role
			return nil
		})
		if err != nil {
			return fmt.Errorf("user set-role: %w", err)
		}
		audit("user.role", pos[0], "set to "+string(role)+" from the shell")
		fmt.Fprintf(out, "%s is now %s\n", pos[0], role)
	case "passwd":
		pw, gen, err := password()
		if err != nil {
			return err
		}
		hash, err := auth.HashPassword(pw, cfg.BcryptCost)
		if err != nil {
			return fmt.Errorf("user passwd: %w", err)
		}
		if _, err := users.Update(ctx, pos[0], func(u *streams.User) error { u.PasswordHash = hash; u.Disabled = false; return nil }); err != nil {
			return fmt.Errorf("user passwd: %w", err)
		}
		audit("user.update", pos[0], "password set from the shell")
		if gen {
			fmt.Fprintf(out, "password of %s set to %s\n", pos[0], pw)
		} else {
			fmt.Fprintf(out, "password of %s set\n", pos[0])
		}
	case "delete":
		u, rev, err := users.Get(ctx, pos[0])
		if err != nil {
			return fmt.Errorf("user delete: %w", err)
		}
		if u.Role == streams.RoleAdmin {
			if n, err := users.CountAdmins(ctx); err != nil || n <= 1 {
				return fmt.Errorf("user delete: %w", errors.Join(err, auth.ErrLastAdmin))
			}
		}
		if err := users.Delete(ctx, pos[0], rev); err != nil {
			return fmt.Errorf("user delete: %w", err)
		}
		audit("user.delete", pos[0], "deleted from the shell")
		fmt.Fprintf(out, "deleted %s\n", pos[0])
	}
	return nil
}
