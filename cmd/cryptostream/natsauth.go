package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"cryptostream/bus"
)

// cmdNATSAuth writes the NATS users of a locked-down cluster: a seed per
// role and the servers' auth.conf (bus.WriteAuth).
func cmdNATSAuth(_ context.Context, args []string, e *env) error {
	var out, rotate, tlsHosts string
	var rotateTLS bool
	fs := newFlagSet("nats-auth", "Gives every role its own NATS user: an NKey seed in <out>/<role>/nats.nkey (0600)\n"+
		"and, for the NATS servers to include, <out>/server/auth.conf with each role's public key and\n"+
		"permissions (the table in docs/operations.md). Existing seeds are kept; --rotate replaces\n"+
		"those of the roles named. Reload the servers after a change (nats-server --signal reload).\n"+
		"With --tls-hosts it also issues a private CA (<out>/tls/ca.pem), the servers' certificate\n"+
		"(<out>/server/tls-cert.pem, tls-key.pem; clients and routes) and a client certificate per role\n"+
		"(<out>/<role>/tls-cert.pem, tls-key.pem) for mutual TLS.", e)
	fs.stringVar(&out, "out", "NATS_AUTH_DIR", "nats-auth", "folder of the seeds and auth.conf")
	fs.stringVar(&rotate, "rotate", "", "", "comma-separated roles whose seeds to replace (admin, ingest, gateway, ...)")
	fs.stringVar(&tlsHosts, "tls-hosts", "NATS_TLS_HOSTS", "", "comma-separated host names of the NATS servers (nats-1,nats-2,nats-3): issue the TLS files for them")
	fs.boolVar(&rotateTLS, "rotate-tls", "", false, "with --tls-hosts: reissue every TLS file from a new CA (the servers and every role must take the new files together)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if rotateTLS && tlsHosts == "" {
		return errors.New("--rotate-tls reissues the files of --tls-hosts: name the hosts")
	}
	var rot []string
	if rotate != "" {
		rot = strings.Split(rotate, ",")
	}
	keys, err := bus.WriteAuth(out, rot)
	if err != nil {
		return err
	}
	for _, r := range bus.Roles() {
		fmt.Fprintf(e.stdout, "%-10s %s  %s\n", r, keys[r], filepath.Join(out, r, bus.KeyFileName))
	}
	fmt.Fprintf(e.stdout, "servers:   include %s\n", filepath.Join(out, "server", bus.AuthConfFile))
	if tlsHosts == "" {
		return nil
	}
	if err := bus.WriteTLS(out, strings.Split(tlsHosts, ","), rotateTLS); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "tls:       ca %s, servers %s, roles <role>/%s\n", filepath.Join(out, "tls", bus.TLSCAFile),
		filepath.Join(out, "server", bus.TLSCertFile), bus.TLSCertFile)
	return nil
}

// cmdTopology applies the topology with the admin's credential and exits:
// on a locked-down cluster the roles only verify it.
func cmdTopology(ctx context.Context, args []string, e *env) error {
	var cfg commonConfig
	fs := newFlagSet("topology", "Creates or updates every stream, bucket and consumer on --nats-url and exits.\n"+
		"On a cluster whose roles have their own NATS users (--nats-role) it runs first, with the\n"+
		"admin's; it never lowers replicas or a limit an operator raised.", e)
	cfg.register(fs, "", "")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	if cfg.NATSURL == "" {
		return errors.New("topology: --nats-url is required (an embedded server applies its own)")
	}
	if cfg.NATSRole != "" && cfg.NATSRole != bus.RoleAdmin {
		return fmt.Errorf("topology: --nats-role %s may not create streams; use the admin's user", cfg.NATSRole)
	}
	log := cfg.logger(e)
	b, err := bus.Open(ctx, cfg.busConfig("cryptostream-topology"), log)
	if err != nil {
		return err
	}
	b.Close()
	fmt.Fprintf(e.stdout, "topology applied: %d streams and buckets\n", len(b.Topology.StreamNames()))
	return nil
}
