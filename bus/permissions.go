package bus

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"cryptostream/streams"
)

// Roles with a NATS user of their own. On a cluster each role connects as
// its user, whose permissions (Permissions) reach only the streams,
// buckets and JetStream API calls that role needs: a compromised gateway
// cannot publish candles, and the ingester cannot read users.
//
// RoleAdmin is the operator's user: it applies the topology (the roles
// only verify it, since creating or editing streams would let a role
// mirror a bucket it may not read into one it may), manages users, imports
// history and takes backups.
const (
	RoleAdmin     = "admin"
	RoleIngest    = "ingest"
	RoleFeatures  = "features"
	RoleTrainer   = "trainer"
	RolePredictor = "predictor"
	RoleNotifier  = "notifier"
	RoleSink      = "sink"
	RoleGateway   = "gateway"
)

// access is what one role may touch, by stream and bucket name; the
// subjects come from streams' declarations, so that the table cannot drift
// from the topology.
type access struct {
	// write are the streams the role publishes to.
	write []string
	// read are the streams the role consumes or looks up.
	read []string
	// kvRead and kvWrite are buckets read (get, list, watch) and written.
	kvRead, kvWrite []string
	// objRead and objWrite are object stores read and written.
	objRead, objWrite []string
}

// roleAccess is the roles × resources table. Every partitioned or
// active/standby role renews its leases in the leases bucket.
var roleAccess = map[string]access{
	RoleIngest: {
		write: []string{streams.StreamMarket, streams.StreamTicks},
		read:  []string{streams.StreamMarket},
		// It seeds the tracked pairs of --symbols.
		kvWrite: []string{streams.BucketAssets, streams.BucketLeases},
	},
	RoleFeatures: {
		write:   []string{streams.StreamFeatures},
		read:    []string{streams.StreamMarket},
		kvWrite: []string{streams.BucketLeases},
	},
	RoleTrainer: {
		write: []string{streams.StreamModels},
		// MARKET: the backtest worker beside it replays candles.
		read:     []string{streams.StreamFeatures, streams.StreamJobs, streams.StreamMarket},
		kvWrite:  []string{streams.BucketModelRegistry, streams.BucketJobs, streams.BucketLeases},
		objWrite: []string{streams.ObjectStoreModels},
	},
	RolePredictor: {
		write: []string{streams.StreamPredictions},
		// PREDICTIONS: a warm after a takeover or a lost lease reads back
		// the forecasts still waiting for their target.
		read: []string{streams.StreamFeatures, streams.StreamJobs, streams.StreamModels, streams.StreamPredictions},
		// It stores each forecast's running score beside the models.
		kvWrite: []string{streams.BucketModelRegistry, streams.BucketJobs, streams.BucketLeases},
		objRead: []string{streams.ObjectStoreModels},
	},
	RoleNotifier: {
		write:   []string{streams.StreamAlerts},
		read:    []string{streams.StreamMarket, streams.StreamTicks, streams.StreamPredictions, streams.StreamAudit, streams.StreamAlerts},
		kvRead:  []string{streams.BucketAssets},
		kvWrite: []string{streams.BucketAlertRules, streams.BucketWebhookDeliveries, streams.BucketLeases},
	},
	RoleSink: {
		read:   []string{streams.StreamMarket, streams.StreamPredictions, streams.StreamAlerts, streams.StreamAudit},
		kvRead: []string{streams.BucketAssets, streams.BucketUsers, streams.BucketModelRegistry},
	},
	RoleGateway: {
		write:  []string{streams.StreamJobs, streams.StreamAudit},
		read:   []string{streams.StreamMarket, streams.StreamTicks, streams.StreamPredictions, streams.StreamAlerts, streams.StreamModels},
		kvRead: []string{streams.BucketModelRegistry},
		kvWrite: []string{streams.BucketUsers, streams.BucketAssets, streams.BucketAlertRules, streams.BucketJobs,
			streams.BucketPreferences},
		// The backtests' HTML reports.
		objRead: []string{streams.ObjectStoreModels},
	},
}

// Roles lists every role with a NATS user, admin first.
func Roles() []string {
	out := []string{RoleAdmin}
	for r := range roleAccess {
		out = append(out, r)
	}
	sort.Strings(out[1:])
	return out
}

// ValidRole reports whether role has a NATS user.
func ValidRole(role string) bool {
	_, ok := roleAccess[role]
	return ok || role == RoleAdmin
}

// InboxPrefix is the reply subject prefix of a role's connection. Each
// role subscribes only to its own, so that no role reads the replies
// another is sent (a watch of the users bucket is delivered to an inbox).
func InboxPrefix(role string) string { return "_INBOX_" + role }

// Permissions are the NATS permissions of role's user.
func Permissions(role string) (*server.Permissions, error) {
	if role == RoleAdmin {
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{">"}},
		}, nil
	}
	a, ok := roleAccess[role]
	if !ok {
		return nil, fmt.Errorf("bus: no NATS role %q (want one of %v)", role, Roles())
	}
	subjects := streamSubjects()
	// Every role reads the account's JetStream limits and the list of
	// stream names (Ready checks that none is missing): names only.
	pub := []string{"$JS.API.INFO", "$JS.API.STREAM.NAMES"}
	for _, s := range a.write {
		pub = append(pub, subjects[s]...)
		// A partition owner reads its fence marker back (pipeline's
		// server-side fence): one message by subject, stored or direct.
		pub = append(pub, "$JS.API.STREAM.INFO."+s, "$JS.API.STREAM.MSG.GET."+s, "$JS.API.DIRECT.GET."+s+".>")
	}
	read := slices.Clone(a.read)
	for _, b := range a.kvRead {
		read = append(read, "KV_"+b)
	}
	for _, b := range a.kvWrite {
		read = append(read, "KV_"+b)
		pub = append(pub, "$KV."+b+".>")
	}
	for _, b := range a.objRead {
		read = append(read, "OBJ_"+b)
	}
	for _, b := range a.objWrite {
		read = append(read, "OBJ_"+b)
		// Replacing an object purges its old chunks.
		pub = append(pub, "$O."+b+".>", "$JS.API.STREAM.PURGE.OBJ_"+b)
	}
	for _, s := range read {
		pub = append(pub, readSubjects(s)...)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: dedup(pub)},
		Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(role) + ".>"}},
	}, nil
}

// NkeyUsers are the server's users for the roles' public keys (role ->
// public NKey), each with its role's permissions.
func NkeyUsers(keys map[string]string) ([]*server.NkeyUser, error) {
	var out []*server.NkeyUser
	for _, role := range Roles() {
		pub, ok := keys[role]
		if !ok {
			continue
		}
		p, err := Permissions(role)
		if err != nil {
			return nil, err
		}
		out = append(out, &server.NkeyUser{Nkey: pub, Permissions: p})
	}
	if len(out) != len(keys) {
		return nil, fmt.Errorf("bus: keys for unknown roles in %v (want %v)", keys, Roles())
	}
	return out, nil
}

// readSubjects are the JetStream API calls that read stream s: its info,
// consumers on it (the declared durables, and the ordered ones that
// replays, warm-ups and bucket watches create and delete), their acks and
// flow control, a partition owner's reset, and direct or stored gets of
// one message. The server
// cannot tell an ordered consumer's name from a durable's, so a reader of
// s may also edit or delete another role's consumer on s: it can stall
// that role, not read or write anything beyond s.
func readSubjects(s string) []string {
	return []string{
		"$JS.API.STREAM.INFO." + s,
		"$JS.API.STREAM.MSG.GET." + s,
		"$JS.API.DIRECT.GET." + s,
		"$JS.API.DIRECT.GET." + s + ".>",
		"$JS.API.CONSUMER.CREATE." + s,
		"$JS.API.CONSUMER.CREATE." + s + ".>",
		"$JS.API.CONSUMER.INFO." + s + ".*",
		"$JS.API.CONSUMER.DELETE." + s + ".*",
		"$JS.API.CONSUMER.MSG.NEXT." + s + ".*",
		"$JS.API.CONSUMER.UNPIN." + s + ".*",
		// A partition's new owner rewinds its consumer to the ack floor.
		"$JS.API.CONSUMER.RESET." + s + ".*",
		"$JS.ACK." + s + ".>",
		"$JS.FC." + s + ".>",
	}
}

// visibleStreams are the streams (and backing streams of buckets) whose
// info role may read: the ones its metrics and readiness look at.
func visibleStreams(role string, all []string) []string {
	if role == "" || role == RoleAdmin {
		return all
	}
	a := roleAccess[role]
	seen := map[string]bool{}
	for _, s := range slices.Concat(a.write, a.read) {
		seen[s] = true
	}
	for _, b := range slices.Concat(a.kvRead, a.kvWrite) {
		seen["KV_"+b] = true
	}
	for _, b := range slices.Concat(a.objRead, a.objWrite) {
		seen["OBJ_"+b] = true
	}
	var out []string
	for _, s := range all {
		if seen[s] {
			out = append(out, s)
		}
	}
	return out
}

// streamSubjects maps each declared stream to its subjects.
func streamSubjects() map[string][]string {
	out := map[string][]string{}
	for _, s := range streams.Declare(1).Streams {
		out[s.Name] = s.Subjects
	}
	return out
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// AuthConfig is the nats-server configuration of the roles' users (role ->
// public NKey) with their permissions, for a server to include. Only
// public keys are in it: each role keeps its seed.
func AuthConfig(keys map[string]string) ([]byte, error) {
	users, err := NkeyUsers(keys)
	if err != nil {
		return nil, err
	}
	role := map[string]string{}
	for r, k := range keys {
		role[k] = r
	}
	var b strings.Builder
	b.WriteString("# The NATS users of cryptostream, one per role, written by `cryptostream nats-auth`.\n")
	b.WriteString("# Include it in the server's configuration (include ./auth.conf) and reload\n")
	b.WriteString("# the server after a rotation (nats-server --signal reload).\n")
	b.WriteString("authorization {\n  users: [\n")
	for _, u := range users {
		// JSON, whose quoted strings keep the $ of $JS.API subjects
		// from being read as a variable; the server's format takes it.
		var perms strings.Builder
		enc := json.NewEncoder(&perms)
		enc.SetEscapeHTML(false)
		enc.SetIndent("      ", "  ")
		if err := enc.Encode(u.Permissions); err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "    # %s\n    {\"nkey\": %q,\n     \"permissions\": %s    }\n", role[u.Nkey], u.Nkey, perms.String())
	}
	b.WriteString("  ]\n}\n")
	return []byte(b.String()), nil
}

// AccessTable is the roles × resources table as Markdown, for
// docs/operations.md (a test keeps the page equal to it).
func AccessTable() string {
	var b strings.Builder
	b.WriteString("| role | publishes to | reads | buckets read | buckets written | object stores |\n")
	b.WriteString("|---|---|---|---|---|---|\n")
	b.WriteString("| admin | everything (`>`) | everything | all | all | all |\n")
	list := func(xs []string) string {
		if len(xs) == 0 {
			return "—"
		}
		return strings.Join(xs, ", ")
	}
	for _, role := range Roles()[1:] {
		a := roleAccess[role]
		var objs []string
		for _, o := range a.objRead {
			objs = append(objs, o+" (read)")
		}
		for _, o := range a.objWrite {
			objs = append(objs, o+" (write)")
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", role, list(a.write), list(a.read), list(a.kvRead), list(a.kvWrite), list(objs))
	}
	return b.String()
}
