// Tests of the deployment files: what an operator starts must have no open
// door. They parse the files as the tools do and start the real server with
// the options they give.
package deploy_test

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.yaml.in/yaml/v3"
)

type composeFile struct {
	XRole    map[string]any            `yaml:"x-role"`
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Ports       []string          `yaml:"ports"`
	Environment map[string]string `yaml:"environment"`
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

// Issue 11 item 1: every NATS node of the compose cluster requires a
// credential of clients and of routes, and the roles present it.
func TestComposeNATSRequiresCredentials(t *testing.T) {
	c := loadCompose(t)
	env := map[string]string{"NATS_PASSWORD": "compose-test-secret"}
	nodes := 0
	for name, svc := range c.Services {
		if !strings.HasPrefix(svc.Image, "nats:") {
			continue
		}
		nodes++
		var args []string
		for _, a := range svc.Command {
			args = append(args, interpolate(a, env))
		}
		fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
		opts, err := server.ConfigureOptions(fs, args, func() {}, func() {}, func() {})
		if err != nil {
			t.Fatalf("%s: nats-server refuses its command %q: %v", name, args, err)
		}
		if opts.Username == "" || opts.Password != env["NATS_PASSWORD"] {
			t.Errorf("%s: clients need no password (user %q)", name, opts.Username)
		}
		if opts.Cluster.Username == "" || opts.Cluster.Password != env["NATS_PASSWORD"] {
			t.Errorf("%s: routes need no password", name)
		}
		for _, r := range opts.Routes {
			if r.User == nil {
				t.Errorf("%s: route %s presents no credential", name, r.Redacted())
			}
		}
		for _, p := range svc.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %s beyond loopback", name, p)
			}
		}
		if name != "nats-1" {
			continue
		}
		// Start this node alone on random ports: a client without the
		// password is refused, the roles' credential is taken.
		opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
		opts.Cluster = server.ClusterOpts{}
		opts.Routes = nil
		opts.StoreDir = t.TempDir()
		opts.NoLog, opts.NoSigs = true, true
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats-1 not ready")
		}
		defer s.Shutdown()
		if nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(0)); err == nil {
			nc.Close()
			t.Error("nats-1 admits a client with no credential")
		}
		roleEnv, _ := c.XRole["environment"].(map[string]any)
		user, _ := roleEnv["NATS_USER"].(string)
		pass, _ := roleEnv["NATS_PASSWORD"].(string)
		nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, interpolate(pass, env)), nats.MaxReconnects(0))
		if err != nil {
			t.Errorf("nats-1 refuses the roles' credential (NATS_USER %q): %v", user, err)
		} else {
			nc.Close()
		}
	}
	if nodes != 3 {
		t.Fatalf("%d NATS nodes in the compose file, want 3", nodes)
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
		case strings.HasPrefix(svc.Image, "nats:"):
			// Checked with the server's own options above.
		case name == "gateway":
			// Its API takes tokens; /metrics moves to --metrics-addr.
		case strings.HasPrefix(svc.Image, "grafana/"):
			if svc.Environment["GF_AUTH_ANONYMOUS_ENABLED"] != "false" || svc.Environment["GF_SECURITY_ADMIN_PASSWORD"] == "" {
				t.Errorf("grafana publishes %v with anonymous access or no admin password", svc.Ports)
			}
		default:
			t.Errorf("%s publishes %v with no authentication", name, svc.Ports)
		}
	}
}

// Issue 11 item 1: the Kubernetes NATS cluster requires the nats-auth
// credential of clients and routes, and every role presents it.
func TestKubernetesNATSRequiresCredentials(t *testing.T) {
	raw, err := os.ReadFile("k8s/nats.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var conf string
	var args []string
	var secret map[string]string
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	for {
		var doc struct {
			Kind       string `yaml:"kind"`
			Metadata   struct{ Name string }
			Data       map[string]string `yaml:"data"`
			StringData map[string]string `yaml:"stringData"`
			Spec       struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Args []string `yaml:"args"`
						} `yaml:"containers"`
					} `yaml:"spec"`
				} `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); err != nil {
			break
		}
		switch {
		case doc.Kind == "ConfigMap":
			conf = doc.Data["nats.conf"]
		case doc.Kind == "Secret" && doc.Metadata.Name == "nats-auth":
			secret = doc.StringData
		case doc.Kind == "StatefulSet":
			args = doc.Spec.Template.Spec.Containers[0].Args
		}
	}
	if secret["NATS_USER"] == "" || secret["NATS_PASSWORD"] == "" {
		t.Fatalf("no nats-auth secret with NATS_USER and NATS_PASSWORD: %v", secret)
	}
	t.Setenv("NATS_USER", secret["NATS_USER"])
	t.Setenv("NATS_PASSWORD", secret["NATS_PASSWORD"])
	t.Setenv("POD_NAME", "nats-0")
	path := t.TempDir() + "/nats.conf"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, a := range args {
		a = strings.ReplaceAll(a, "/etc/nats/nats.conf", path)
		a = strings.ReplaceAll(a, "$(NATS_USER)", secret["NATS_USER"])
		args[i] = strings.ReplaceAll(a, "$(NATS_PASSWORD)", secret["NATS_PASSWORD"])
	}
	fs := flag.NewFlagSet("nats-server", flag.ContinueOnError)
	opts, err := server.ConfigureOptions(fs, args, func() {}, func() {}, func() {})
	if err != nil {
		t.Fatalf("nats-server refuses %q: %v", args, err)
	}
	if opts.Username != secret["NATS_USER"] || opts.Password != secret["NATS_PASSWORD"] {
		t.Errorf("clients need no credential (user %q)", opts.Username)
	}
	if opts.Cluster.Username == "" || opts.Cluster.Password == "" {
		t.Error("routes need no credential")
	}
	if len(opts.Routes) != 3 {
		t.Errorf("%d routes, want 3", len(opts.Routes))
	}
	for _, r := range opts.Routes {
		if r.User == nil {
			t.Errorf("route %s presents no credential", r.Redacted())
		}
	}
	roles, err := os.ReadFile("k8s/cryptostream.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if n, m := strings.Count(string(roles), "configMapRef: { name: cryptostream }"), strings.Count(string(roles), "secretRef: { name: nats-auth }"); n == 0 || n != m {
		t.Errorf("%d roles read the cryptostream config, %d the nats-auth credential", n, m)
	}
}

// Issue 11 item 2: Prometheus loads the stream alert rules, in compose.
func TestPrometheusLoadsAlertRules(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	raw, err := os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if strings.Contains(r.Expr, "cryptostream_stream_bytes / cryptostream_stream_max_bytes") {
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
	raw, err = os.ReadFile("prometheus.yml")
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
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	return c.Services[service].Volumes
}
