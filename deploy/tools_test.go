package deploy_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// tool finds a checker on PATH. scripts/test.sh installs them all and sets
// CRYPTOSTREAM_DEPLOY_TOOLS=1, so that in the suite a missing one fails
// rather than skips; a developer's go test without them skips, saying so.
func tool(t *testing.T, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CRYPTOSTREAM_DEPLOY_TOOLS") != "" {
		t.Fatalf("none of %v is installed (scripts/test.sh installs them)", names)
	}
	t.Skipf("none of %v is installed; scripts/test.sh installs them", names)
	return ""
}

func runTool(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}

var metricName = regexp.MustCompile(`\bcryptostream_[a-z0-9_]+`)

// registeredMetrics are the metric names the code declares: every
// "cryptostream_..." literal of a non-test Go file (the house style names
// every metric in full, with no Namespace or Subsystem to join).
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && path != ".." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range regexp.MustCompile(`"(cryptostream_[a-z0-9_]+)"`).FindAllSubmatch(raw, -1) {
			names[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 20 {
		t.Fatalf("found only %d metric names in the code: the scan is broken", len(names))
	}
	return names
}

// known reports whether a queried series exists: a histogram is queried
// by its _bucket, _sum and _count series.
func known(names map[string]bool, q string) bool {
	if names[q] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(q, suffix); ok && names[base] {
			return true
		}
	}
	return false
}

func dashboardExprs(t *testing.T) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile("grafana/provisioning/dashboards/cryptostream.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	out := map[string][]string{}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out[p.Title] = append(out[p.Title], tg.Expr)
		}
	}
	return out
}

func alertExprs(t *testing.T) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &rules); err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out[r.Alert] = append(out[r.Alert], r.Expr)
		}
	}
	return out
}

// Issue 16: the Grafana dashboard and the alert rules query only metric
// names the code registers, and the dashboard has the panels the issue
// asks for.
func TestDashboardAndAlertsQueryRegisteredMetrics(t *testing.T) {
	names := registeredMetrics(t)
	dash := dashboardExprs(t)
	for what, exprs := range map[string]map[string][]string{"dashboard panel": dash, "alert": alertExprs(t)} {
		for title, list := range exprs {
			for _, e := range list {
				used := metricName.FindAllString(e, -1)
				if len(used) == 0 {
					t.Errorf("%s %q queries no cryptostream metric: %s", what, title, e)
				}
				for _, m := range used {
					if !known(names, m) {
						t.Errorf("%s %q queries %s, which the code does not register", what, title, m)
					}
				}
			}
		}
	}
	var all []string
	for _, list := range dash {
		all = append(all, list...)
	}
	joined := strings.Join(all, "\n")
	for _, want := range []string{
		"cryptostream_pipeline_inputs_total",              // throughput
		"cryptostream_pipeline_consumer_backlog_messages", // consumer lag per stage
		"cryptostream_pipeline_latency_seconds_bucket",    // end-to-end latency per stage
		"cryptostream_gateway_ws_clients",                 // websocket clients
		"cryptostream_predictor_live_mae",                 // prediction error live
		"cryptostream_notifier_alerts_fired_total",        // alerts fired
		"cryptostream_ingest_completeness_ratio",          // ingest completeness
		"cryptostream_pipeline_partitions_owned",          // partition ownership
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("no dashboard panel queries %s", want)
		}
	}
}

// Issue 16: promtool accepts the alert rules and the Prometheus config
// with them.
func TestPromtoolChecksRulesAndConfig(t *testing.T) {
	promtool := tool(t, "promtool")
	runTool(t, ".", nil, promtool, "check", "rules", "alerts.yml")
	// The config names the rules where compose mounts them.
	raw, err := os.ReadFile("prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rules, _ := os.ReadFile("alerts.yml")
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := strings.ReplaceAll(string(raw), "/etc/prometheus/alerts.yml", filepath.Join(dir, "alerts.yml"))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, dir, nil, promtool, "check", "config", "prometheus.yml")
}

// Issue 16: docker compose itself reads the compose file, with the
// variables an operator must set.
func TestDockerComposeConfig(t *testing.T) {
	compose := tool(t, "docker-compose")
	var env []string
	for k, v := range composeEnv {
		env = append(env, k+"="+v)
	}
	runTool(t, "..", env, compose, "config", "--quiet")
	// And it refuses to start without them.
	cmd := exec.Command(compose, "config", "--quiet")
	cmd.Dir = ".."
	cmd.Env = slices.DeleteFunc(append(os.Environ(), env...), func(s string) bool { return strings.HasPrefix(s, "NATS_JS_KEY=") })
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "NATS_JS_KEY") {
		t.Errorf("docker compose config without NATS_JS_KEY: %v\n%s", err, out)
	}
}

// Issue 16: Caddy accepts the load balancer's configuration.
func TestCaddyfileValid(t *testing.T) {
	caddy := tool(t, "caddy")
	runTool(t, ".", nil, caddy, "validate", "--config", "Caddyfile", "--adapter", "caddyfile")
}

// Issue 16: kustomize builds the manifests, and what it builds runs every
// role as its own NATS user with its own secret and no other's, with
// probes, requests and limits, and a PodDisruptionBudget for every
// workload of more than one replica. TestKubeconform checks the schemas.
func TestKustomizeBuild(t *testing.T) {
	var out string
	if k := tool(t, "kubectl", "kustomize"); filepath.Base(k) == "kubectl" {
		out = runTool(t, ".", nil, k, "kustomize", "k8s")
	} else {
		out = runTool(t, ".", nil, k, "build", "k8s")
	}
	docs := decodeK8s(t, []byte(out))
	pdbs := map[string]bool{}
	for _, d := range docs {
		if d.Kind == "PodDisruptionBudget" {
			pdbs[d.Metadata.Name] = true
		}
	}
	roles := map[string]bool{}
	for _, d := range docs {
		if d.Kind != "Deployment" && d.Kind != "StatefulSet" {
			continue
		}
		name := d.Metadata.Name
		if d.Spec.Replicas != nil && *d.Spec.Replicas > 1 && !pdbs[name] {
			t.Errorf("%s has %d replicas and no PodDisruptionBudget", name, *d.Spec.Replicas)
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("%s/%s lacks a readiness or liveness probe", name, c.Name)
			}
			if c.Resources.Requests["cpu"] == "" || c.Resources.Limits["memory"] == "" {
				t.Errorf("%s/%s lacks resource requests or limits: %+v", name, c.Name, c.Resources)
			}
		}
		if d.Kind != "Deployment" {
			continue
		}
		roles[name] = true
		var natsRole string
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "NATS_ROLE" {
				natsRole = e.Value
			}
		}
		if natsRole != name {
			t.Errorf("deployment %s connects as NATS role %q", name, natsRole)
		}
		var secrets []string
		for _, v := range d.Spec.Template.Spec.Volumes {
			if strings.HasPrefix(v.Secret.SecretName, "nats-") {
				secrets = append(secrets, v.Secret.SecretName)
			}
		}
		want := []string{"nats-" + name, "nats-ca"}
		slices.Sort(secrets)
		slices.Sort(want)
		if !slices.Equal(secrets, want) {
			t.Errorf("deployment %s mounts the NATS secrets %v, want its own and the CA", name, secrets)
		}
	}
	for _, r := range []string{"ingest", "features", "trainer", "predictor", "notifier", "sink", "gateway"} {
		if !roles[r] {
			t.Errorf("no deployment for %s", r)
		}
	}
}

// Issue 16: kubeconform validates what kustomize builds against the
// Kubernetes API's schemas, strictly (an unknown field is an error), with
// the schemas built offline by scripts/kubeconform.sh; and it refuses the
// same manifests with one field misspelt, so the check is not a no-op.
func TestKubeconform(t *testing.T) {
	tool(t, "kubectl", "kustomize")
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go is not on PATH: scripts/kubeconform.sh builds its schemas with it")
	}
	out := runTool(t, ".", nil, "bash", "../scripts/kubeconform.sh", "k8s")
	if !strings.Contains(out, "Invalid: 0, Errors: 0") || strings.Contains(out, " 0 resources found") {
		t.Errorf("kubeconform: %s", out)
	}

	broken := t.TempDir()
	if err := os.CopyFS(broken, os.DirFS("k8s")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(broken, "cryptostream.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(raw), "readinessProbe:", "readinesProbe:", 1)
	if bad == string(raw) {
		t.Fatal("cryptostream.yaml has no readinessProbe to misspell")
	}
	if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "../scripts/kubeconform.sh", broken)
	got, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(got), "readinesProbe") {
		t.Errorf("kubeconform passed a misspelt field (err %v):\n%s", err, got)
	}
}
