// Tests of the deployment files: what an operator starts must have no open
// door. They parse the files as the tools do and start the real server with
// the options they give.
package deploy_test

import (
	"crypto/tls"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"

	"cryptostream/bus"
	"cryptostream/natstest"
)

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Ports       []string          `yaml:"ports"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []composeVolume   `yaml:"volumes"`
	Healthcheck map[string]any    `yaml:"healthcheck"`
	Deploy      struct {
		Replicas int `yaml:"replicas"`
	} `yaml:"deploy"`
}

// composeVolume is a mount in either of compose's syntaxes, the short
// "source:target[:ro]" or the long one.
type composeVolume struct {
	Type, Source, Target string
	ReadOnly             bool `yaml:"read_only"`
	Volume               struct {
		Subpath string `yaml:"subpath"`
	} `yaml:"volume"`
}

func (v *composeVolume) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		parts := strings.Split(n.Value, ":")
		v.Source, v.Target = parts[0], parts[1]
		v.ReadOnly = len(parts) > 2 && parts[2] == "ro"
		return nil
	}
	type plain composeVolume
	return n.Decode((*plain)(v))
}

// interpolate does what docker compose does to ${VAR:?message}.
func interpolate(s string, env map[string]string) string {
	return regexp.MustCompile(`\$\{([A-Z_]+)(:\?[^}]*)?\}`).ReplaceAllStringFunc(s, func(m string) string {
		name := regexp.MustCompile(`[A-Z_]+`).FindString(m)
		return env[name]
	})
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// composeEnv is what an operator exports before docker compose up.
var composeEnv = map[string]string{
	"NATS_JS_KEY": "compose-test-key-of-forty-four-characters-00=", "ADMIN_PASSWORD": "a", "GRAFANA_PASSWORD": "g",
	"POSTGRES_PASSWORD": "p",
}

// natsNode lays out what the compose file mounts on a NATS node under a
// temp dir (the nats-auth output and nats.conf, its /etc/nats paths moved
// there) and returns the server options nats-server reads from it, with
// the folder of the roles' files.
func natsNode(t *testing.T, svc composeService, name string) (*server.Options, string) {
	t.Helper()
	root := t.TempDir()
	auth := filepath.Join(root, "nats-auth")
	if _, err := bus.WriteAuth(auth, nil); err != nil {
		t.Fatal(err)
	}
	if err := bus.WriteTLS(auth, []string{"nats-1", "nats-2", "nats-3"}, false); err != nil {
		t.Fatal(err)
	}
	etc := filepath.Join(root, "etc-nats")
	for _, v := range svc.Volumes {
		if !strings.HasPrefix(v.Target, "/etc/nats") {
			continue
		}
		if !v.ReadOnly {
			t.Errorf("%s mounts %s writable", name, v.Target)
		}
		dst := filepath.Join(etc, strings.TrimPrefix(v.Target, "/etc/nats"))
		var src string
		switch {
		case v.Source == "nats-auth" && v.Volume.Subpath != "":
			src = filepath.Join(root, v.Volume.Subpath)
		case strings.HasPrefix(v.Source, "./"):
			src = filepath.Join("..", v.Source)
		default:
			t.Fatalf("%s mounts %+v on /etc/nats", name, v)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		abs, err := filepath.Abs(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(abs, dst); err != nil {
			t.Fatal(err)
		}
	}
	conf, err := os.ReadFile(filepath.Join(etc, "nats.conf"))
	if err != nil {
		t.Fatalf("%s mounts no nats.conf: %v", name, err)
	}
	local := filepath.Join(etc, "local.conf")
	if err := os.WriteFile(local, []byte(strings.ReplaceAll(string(conf), "/etc/nats/", etc+"/")), 0o600); err != nil {
		t.Fatal(err)
	}
	for k, v := range svc.Environment {
		t.Setenv(k, interpolate(v, composeEnv))
	}
	args := slices.Clone(svc.Command)
	for i, a := range args {
		if a == "/etc/nats/nats.conf" {
			args[i] = local
		}
	}
	fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
	opts, err := server.ConfigureOptions(fs, args, func() {}, func() {}, func() {})
	if err != nil {
		t.Fatalf("%s: nats-server refuses its configuration: %v", name, err)
	}
	return opts, auth
}

// Issue 16: every NATS node of the compose cluster takes clients and
// routes on mutual TLS only, has the roles' users, and encrypts its store;
// started alone, it admits a role with its own files and refuses a client
// without the CA's certificate.
func TestComposeNATSClusterLockedDown(t *testing.T) {
	c := loadCompose(t)
	nodes := 0
	for name, svc := range c.Services {
		if !strings.HasPrefix(svc.Image, "nats:") {
			continue
		}
		nodes++
		t.Run(name, func(t *testing.T) {
			opts, auth := natsNode(t, svc, name)
			if opts.ServerName != name {
				t.Errorf("server name %q", opts.ServerName)
			}
			if opts.TLSConfig == nil || opts.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
				t.Error("clients are not on verified TLS")
			}
			if opts.Cluster.TLSConfig == nil || opts.Cluster.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
				t.Error("routes are not on mutual TLS")
			}
			if len(opts.Routes) != 3 {
				t.Errorf("%d routes, want 3", len(opts.Routes))
			}
			if opts.JetStreamKey != composeEnv["NATS_JS_KEY"] || opts.JetStreamCipher != server.ChaCha {
				t.Error("the store is not encrypted with NATS_JS_KEY")
			}
			if len(opts.Nkeys) != len(bus.Roles()) {
				t.Errorf("%d users, want one per role (%d)", len(opts.Nkeys), len(bus.Roles()))
			}
			for _, p := range svc.Ports {
				t.Errorf("%s publishes %s", name, p)
			}
			if name != "nats-1" {
				return
			}
			opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
			opts.Cluster = server.ClusterOpts{}
			opts.Routes = nil
			opts.StoreDir = t.TempDir()
			opts.JetStreamMaxStore = natstest.MaxStore
			s := natstest.Start(t, opts)
			// A role as compose configures it, its paths moved to the
			// temp layout.
			ingest := c.Services["ingest"]
			path := func(p string) string {
				p = strings.Replace(p, "/etc/cryptostream/nats/", filepath.Join(auth, bus.RoleIngest)+"/", 1)
				return strings.Replace(p, "/etc/cryptostream/tls/", filepath.Join(auth, "tls")+"/", 1)
			}
			cfg := bus.Config{URL: strings.Replace(s.ClientURL(), "nats://", "tls://", 1), Role: ingest.Environment["NATS_ROLE"],
				NKeyFile: path(ingest.Environment["NATS_NKEY_FILE"]), TLSCA: path(ingest.Environment["NATS_TLS_CA"]),
				TLSCert: path(ingest.Environment["NATS_TLS_CERT"]), TLSKey: path(ingest.Environment["NATS_TLS_KEY"])}
			opts2, err := bus.ClientAuth(cfg)
			if err != nil {
				t.Fatal(err)
			}
			nc, err := nats.Connect(cfg.URL, append(opts2, nats.MaxReconnects(0))...)
			if err != nil {
				t.Fatalf("nats-1 refuses ingest with its own files: %v", err)
			}
			nc.Close()
			cfg.TLSCert, cfg.TLSKey = "", ""
			opts2, _ = bus.ClientAuth(cfg)
			if nc, err := nats.Connect(cfg.URL, append(opts2, nats.MaxReconnects(0))...); err == nil {
				nc.Close()
				t.Error("nats-1 admits a client with no certificate")
			}
			key, _ := nats.NkeyOptionFromSeed(cfg.NKeyFile)
			if nc, err := nats.Connect(s.ClientURL(), key, nats.MaxReconnects(0)); err == nil {
				nc.Close()
				t.Error("nats-1 admits a client with no TLS")
			}
		})
	}
	if nodes != 3 {
		t.Fatalf("%d NATS nodes in the compose file, want 3", nodes)
	}
}

// scaled are the roles the compose file runs twice: the partitioned
// workers, ingest's active/standby pair, the trainers on the work queue
// and the gateways behind the load balancer.
var scaled = []string{bus.RoleIngest, bus.RoleFeatures, bus.RoleTrainer, bus.RolePredictor, bus.RoleNotifier, bus.RoleGateway}

// Issue 16: every role is a service of its own that connects as its own
// NATS user over TLS, mounts its own credentials and no other role's, has
// a health check, and runs twice where it scales.
func TestComposeRolesAsTheirOwnUsers(t *testing.T) {
	c := loadCompose(t)
	for _, role := range bus.Roles()[1:] {
		t.Run(role, func(t *testing.T) {
			svc, ok := c.Services[role]
			if !ok {
				t.Fatal("no service")
			}
			if len(svc.Command) == 0 || svc.Command[0] != role {
				t.Errorf("command %q", svc.Command)
			}
			if svc.Environment["NATS_ROLE"] != role {
				t.Errorf("NATS_ROLE %q", svc.Environment["NATS_ROLE"])
			}
			if !strings.HasPrefix(svc.Environment["NATS_URL"], "tls://") || svc.Environment["NATS_TLS_CERT"] == "" ||
				svc.Environment["NATS_TLS_CA"] == "" || svc.Environment["NATS_NKEY_FILE"] == "" || svc.Environment["NATS_REPLICAS"] != "3" {
				t.Errorf("not on TLS with its own credential at R3: %v", svc.Environment)
			}
			var subpaths []string
			for _, v := range svc.Volumes {
				if v.Source == "nats-auth" {
					subpaths = append(subpaths, v.Volume.Subpath)
					if !v.ReadOnly {
						t.Errorf("mounts %s writable", v.Volume.Subpath)
					}
				}
			}
			want := []string{"nats-auth/" + role, "nats-auth/tls"}
			slices.Sort(subpaths)
			slices.Sort(want)
			if !slices.Equal(subpaths, want) {
				t.Errorf("mounts %v of the credentials, want its own and the CA only", subpaths)
			}
			if svc.Healthcheck == nil {
				t.Error("no health check")
			}
			replicas := 0
			if slices.Contains(scaled, role) {
				replicas = 2
			}
			if svc.Deploy.Replicas != replicas {
				t.Errorf("%d replicas, want %d", svc.Deploy.Replicas, replicas)
			}
		})
	}
	if c.Services["topology"].Environment["NATS_ROLE"] != bus.RoleAdmin {
		t.Error("the topology is not applied by admin")
	}
}

// Issue 11 item 1: no service publishes a port that takes anyone without a
// credential.
func TestComposePublishesNoOpenPort(t *testing.T) {
	c := loadCompose(t)
	for name, svc := range c.Services {
		if len(svc.Ports) == 0 {
			continue
		}
		switch {
		case name == "lb":
			// The gateways' API, which takes tokens; their /metrics is on
			// --metrics-addr, which it does not proxy.
		case strings.HasPrefix(svc.Image, "grafana/"):
			if svc.Environment["GF_AUTH_ANONYMOUS_ENABLED"] != "false" || svc.Environment["GF_SECURITY_ADMIN_PASSWORD"] == "" {
				t.Errorf("grafana publishes %v with anonymous access or no admin password", svc.Ports)
			}
		default:
			t.Errorf("%s publishes %v", name, svc.Ports)
		}
	}
	if c.Services["gateway"].Environment["METRICS_ADDR"] == "" {
		t.Error("the gateways serve /metrics on the address the load balancer proxies")
	}
}

// k8sDoc is the part of a Kubernetes object the tests read.
type k8sDoc struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Spec struct {
				Containers []struct {
					Name           string         `yaml:"name"`
					Args           []string       `yaml:"args"`
					ReadinessProbe map[string]any `yaml:"readinessProbe"`
					LivenessProbe  map[string]any `yaml:"livenessProbe"`
					Resources      struct {
						Requests map[string]string `yaml:"requests"`
						Limits   map[string]string `yaml:"limits"`
					} `yaml:"resources"`
					Env []struct {
						Name, Value string
					} `yaml:"env"`
				} `yaml:"containers"`
				Volumes []struct {
					Name   string `yaml:"name"`
					Secret struct {
						SecretName string `yaml:"secretName"`
					} `yaml:"secret"`
				} `yaml:"volumes"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

func decodeK8s(t *testing.T, raw []byte) []k8sDoc {
	t.Helper()
	var docs []k8sDoc
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	for {
		var d k8sDoc
		if err := dec.Decode(&d); err != nil {
			break
		}
		if d.Kind != "" {
			docs = append(docs, d)
		}
	}
	return docs
}

// Issue 16: the Kubernetes NATS cluster's configuration, read by
// nats-server with the nats-auth files where the pods mount them, puts
// clients and routes on mutual TLS, has the roles' users and encrypts the
// store.
func TestKubernetesNATSLockedDown(t *testing.T) {
	raw, err := os.ReadFile("k8s/nats.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var conf string
	var key map[string]string
	for _, d := range decodeK8s(t, raw) {
		switch {
		case d.Kind == "ConfigMap":
			conf = d.Data["nats.conf"]
		case d.Kind == "Secret" && d.Metadata.Name == "nats-js-key":
			key = d.StringData
		}
	}
	root := t.TempDir()
	if _, err := bus.WriteAuth(root, nil); err != nil {
		t.Fatal(err)
	}
	if err := bus.WriteTLS(root, []string{"nats-0.nats-headless"}, false); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "nats.conf")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(conf, "/etc/nats/", root+"/")), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", "nats-0")
	t.Setenv("NATS_JS_KEY", key["NATS_JS_KEY"])
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server refuses the Kubernetes config: %v", err)
	}
	if opts.TLSConfig == nil || opts.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Error("clients are not on mutual TLS")
	}
	if opts.Cluster.TLSConfig == nil || opts.Cluster.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Error("routes are not on mutual TLS")
	}
	if len(opts.Routes) != 3 {
		t.Errorf("%d routes, want 3", len(opts.Routes))
	}
	if opts.JetStreamKey == "" || opts.JetStreamKey != key["NATS_JS_KEY"] {
		t.Error("the store is not encrypted with the nats-js-key secret")
	}
	if len(opts.Nkeys) != len(bus.Roles()) {
		t.Errorf("%d users, want one per role", len(opts.Nkeys))
	}
}

// Issue 11 item 2: Prometheus loads the stream alert rules, in compose.
func TestPrometheusLoadsAlertRules(t *testing.T) {
	found := false
	for _, exprs := range alertExprs(t) {
		for _, e := range exprs {
			if strings.Contains(e, "cryptostream_stream_bytes / cryptostream_stream_max_bytes") {
				found = true
			}
		}
	}
	if !found {
		t.Fatal("no alert on a stream's fill ratio")
	}
	var prom struct {
		RuleFiles []string `yaml:"rule_files"`
	}
	raw, err := os.ReadFile("prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &prom); err != nil {
		t.Fatal(err)
	}
	mounts := loadComposeVolumes(t, "prometheus")
	for _, f := range prom.RuleFiles {
		ok := false
		for _, m := range mounts {
			if strings.HasSuffix(m, ":"+f+":ro") && strings.HasPrefix(m, "./deploy/alerts.yml") {
				ok = true
			}
		}
		if !ok {
			t.Errorf("rule file %s is not mounted from deploy/alerts.yml in compose (%v)", f, mounts)
		}
	}
	if len(prom.RuleFiles) == 0 {
		t.Error("prometheus.yml loads no rule file")
	}
}

func loadComposeVolumes(t *testing.T, service string) []string {
	t.Helper()
	var out []string
	for _, v := range loadCompose(t).Services[service].Volumes {
		m := v.Source + ":" + v.Target
		if v.ReadOnly {
			m += ":ro"
		}
		out = append(out, m)
	}
	return out
}
