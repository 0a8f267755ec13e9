package e2e

// docker-compose.yml must pass balena's own parser and compose-go, and keep the
// stack's rules: everything built from the Dockerfile, only the proxy published,
// db and redis unreachable from outside, named volumes only, no secrets, and
// healthchecks that survive a long first boot.

import (
	"fmt"

	"github.com/mastodon-on-balena/mastodon-balena/config"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"
)

var stackServices = []string{"db", "redis", "keeper", "web", "streaming", "sidekiq", "proxy", "tor", "cloudflared"}

// stackBalenaParse runs balena's compose parser (@balena/compose-parser, as
// installed by scripts/install-test-deps) on a compose file in dir and returns
// the project it produced as JSON, or its error message.
func stackBalenaParse(t *testing.T, dir, file string) (map[string]any, string) {
	t.Helper()
	node := stackRequireTool(t, "node")
	pkg := filepath.Join(stackCacheDir(t), "node", "node_modules", "@balena", "compose-parser")
	if _, err := os.Stat(filepath.Join(pkg, "bin", "balena-compose-parser")); err != nil {
		stackMissing(t, "balena's compose parser with its Go part built (%s)", pkg)
	}
	script := `
const parser = require(process.argv[1]);
parser.parse([process.argv[2]]).then(
  (p) => { process.stdout.write(JSON.stringify(p)); },
  (e) => { process.stderr.write((e && e.name ? e.name + ': ' : '') + (e && e.message ? e.message : String(e))); process.exit(3); });
`
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "-e", script, pkg, file)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("balena's compose parser timed out; stderr: %s", stderr.String())
	}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("running balena's compose parser: %v; stderr: %s", err, stderr.String())
		}
		return nil, strings.TrimSpace(stderr.String())
	}
	var project map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &project); err != nil {
		t.Fatalf("balena's compose parser printed no JSON project: %v\n%s", err, stdout.String())
	}
	return project, ""
}

func TestComposeBalenaParserAccepts(t *testing.T) {
	root := stackRepoRoot(t)
	project, failure := stackBalenaParse(t, root, "docker-compose.yml")
	if failure != "" {
		t.Fatalf("balena's compose parser rejects docker-compose.yml: %s", failure)
	}

	// What balena keeps is what the devices get: the parser silently drops
	// what it does not support, so check that what we rely on survived.
	services, _ := project["services"].(map[string]any)
	var names []string
	for name := range services {
		names = append(names, name)
	}
	sort.Strings(names)
	want := slices.Clone(stackServices)
	sort.Strings(want)
	if !slices.Equal(names, want) {
		t.Fatalf("balena's parser produced services %v, want %v", names, want)
	}
	get := func(service string, path ...string) any {
		var v any = services[service]
		for _, p := range path {
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[p]
		}
		return v
	}
	for _, s := range stackServices {
		if get(s, "build", "target") != stackComposeTarget(s) {
			t.Errorf("balena: %s build.target = %v, want %s", s, get(s, "build", "target"), stackComposeTarget(s))
		}
		if get(s, "image") != nil {
			t.Errorf("balena: %s has an image %v; images are built from the Dockerfile", s, get(s, "image"))
		}
	}
	for _, s := range []string{"db", "web", "streaming", "sidekiq"} {
		if get(s, "healthcheck", "start_period") == nil {
			t.Errorf("balena dropped %s's healthcheck start_period", s)
		}
	}
	if get("keeper", "labels", "io.balena.features.supervisor-api") != "1" {
		t.Errorf("balena dropped keeper's supervisor-api label: %v", get("keeper", "labels"))
	}
	if ep, _ := get("db", "entrypoint").([]any); len(ep) == 0 || ep[0] != "mastokeeper" {
		t.Errorf("balena: db entrypoint = %v, want the mastokeeper wrapper", get("db", "entrypoint"))
	}
	networks, _ := project["networks"].(map[string]any)
	if backend, _ := networks["backend"].(map[string]any); backend["internal"] != true {
		t.Errorf("balena: network backend is not internal (%v)", networks["backend"])
	}
	// The proxy: read only, and never the keeper's or tor's volume (the
	// secrets); its certificates in their own.
	if got, want := fmt.Sprint(get("proxy", "volumes")), "[system:/srv/mastodon/public/system:ro frontdoor:/srv/frontdoor/live:ro certificates:/data]"; got != want {
		t.Errorf("balena: proxy volumes = %v, want %v", got, want)
	}
	if got, want := fmt.Sprint(get("proxy", "ports")), "[80:80 443:443 443:443/udp]"; got != want {
		t.Errorf("balena: proxy ports = %v, want %v", got, want)
	}
	if got, want := fmt.Sprint(get("tor", "volumes")), "[tor:/var/lib/tor]"; got != want {
		t.Errorf("balena: tor volumes = %v, want %v", got, want)
	}
}

// The check above has teeth: balena's parser refuses what balena refuses.
func TestComposeBalenaParserRejectsHealthyCondition(t *testing.T) {
	dir := t.TempDir()
	bad := "version: '2.4'\nservices:\n  a:\n    image: alpine\n    depends_on:\n      b:\n        condition: service_healthy\n  b:\n    image: alpine\n"
	if err := os.WriteFile(filepath.Join(dir, "docker-compose.yml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, failure := stackBalenaParse(t, dir, "docker-compose.yml"); failure == "" {
		t.Fatal("balena's compose parser accepted depends_on with condition: service_healthy")
	} else {
		t.Logf("rejected as expected: %s", failure)
	}
}

// stackComposeTarget is the Dockerfile target each service is built from.
func stackComposeTarget(service string) string {
	switch service {
	case "keeper", "web", "sidekiq":
		return "mastodon"
	default:
		return service
	}
}

func stackLoadCompose(t *testing.T) *types.Project {
	t.Helper()
	root := stackRepoRoot(t)
	opts, err := cli.NewProjectOptions(
		[]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithName("mastodon-balena"),
		// No environment: the file must not depend on substitution.
		cli.WithEnv(nil),
	)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	project, err := opts.LoadProject(ctx)
	if err != nil {
		t.Fatalf("compose-go rejects docker-compose.yml: %v", err)
	}
	return project
}

func TestComposeGoLoads(t *testing.T) {
	project := stackLoadCompose(t)
	var names []string
	for name := range project.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	want := slices.Clone(stackServices)
	sort.Strings(want)
	if !slices.Equal(names, want) {
		t.Fatalf("services %v, want %v", names, want)
	}
}

func TestComposeRules(t *testing.T) {
	project := stackLoadCompose(t)
	root := stackRepoRoot(t)
	df := stackParseDockerfile(t, stackReadFile(t, "Dockerfile"))
	targets := df.Targets()

	for name, s := range project.Services {
		// Built from this repository's Dockerfile, at one of its targets.
		if s.Build == nil {
			t.Errorf("%s: no build section", name)
		} else {
			if s.Build.Context != root && s.Build.Context != "." {
				t.Errorf("%s: build.context = %q, want the repository root", name, s.Build.Context)
			}
			if df := s.Build.Dockerfile; df != "" && df != "Dockerfile" {
				t.Errorf("%s: build.dockerfile = %q, want Dockerfile", name, df)
			}
			if !targets[s.Build.Target] {
				t.Errorf("%s: build.target %q is not a stage of the Dockerfile (%v)", name, s.Build.Target, targets)
			}
			if want := stackComposeTarget(name); s.Build.Target != want {
				t.Errorf("%s: build.target = %q, want %q", name, s.Build.Target, want)
			}
			if len(s.Build.Args) > 0 {
				t.Errorf("%s: build args %v: pins live in the Dockerfile's ARG defaults", name, s.Build.Args)
			}
		}
		if s.Image != "" {
			t.Errorf("%s: image %q: pins live only in the Dockerfile", name, s.Image)
		}

		// Only the proxy is reachable from outside: HTTP, and HTTPS (with
		// HTTP/3 over UDP) for PROXY_MODE=https.
		if name == "proxy" {
			var ports []string
			for _, p := range s.Ports {
				ports = append(ports, fmt.Sprintf("%s:%d/%s", p.Published, p.Target, p.Protocol))
			}
			if want := []string{"80:80/tcp", "443:443/tcp", "443:443/udp"}; !slices.Equal(ports, want) {
				t.Errorf("proxy: ports %v, want %v", ports, want)
			}
		} else if len(s.Ports) > 0 {
			t.Errorf("%s publishes ports %+v; only the proxy may", name, s.Ports)
		}
		if s.NetworkMode != "" {
			t.Errorf("%s: network_mode %q", name, s.NetworkMode)
		}

		// Networks.
		var nets []string
		for n := range s.Networks {
			nets = append(nets, n)
		}
		sort.Strings(nets)
		var wantNets []string
		switch name {
		case "db", "redis":
			wantNets = []string{"backend"}
		case "proxy", "tor", "cloudflared":
			wantNets = []string{"default"}
		default:
			wantNets = []string{"backend", "default"}
		}
		if !slices.Equal(nets, wantNets) {
			t.Errorf("%s: networks %v, want %v", name, nets, wantNets)
		}

		// balena refuses depends_on conditions, and waits for nothing anyway.
		for dep, d := range s.DependsOn {
			if d.Condition != "" && d.Condition != types.ServiceConditionStarted {
				t.Errorf("%s: depends_on %s has condition %q", name, dep, d.Condition)
			}
		}

		// Named volumes only (balena drops bind mounts).
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeVolume || v.Source == "" {
				t.Errorf("%s: volume %+v is not a named volume", name, v)
				continue
			}
			if _, ok := project.Volumes[v.Source]; !ok {
				t.Errorf("%s: volume %q is not declared at the top level", name, v.Source)
			}
		}

		// No secret, no instance-specific value.
		if len(s.EnvFiles) > 0 {
			t.Errorf("%s: env_file %v; configuration comes from balena variables", name, s.EnvFiles)
		}
		for key, v := range s.Environment {
			up := strings.ToUpper(key)
			for _, bad := range []string{"PASS", "SECRET", "KEY", "TOKEN"} {
				// Passed through without a value (from balena or the shell
				// of docker compose up) is fine; a value here never is.
				if strings.Contains(up, bad) && v != nil && *v != "" {
					t.Errorf("%s: environment %s has a value and looks like a secret; secrets are never in the compose file", name, key)
				}
			}
		}

		if s.Restart != types.RestartPolicyAlways && s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s: restart %q, want always or unless-stopped", name, s.Restart)
		}
	}

	// The internal network and the volumes.
	if n, ok := project.Networks["backend"]; !ok || !n.Internal {
		t.Errorf("network backend must exist with internal: true (%+v)", n)
	}
	for name, v := range project.Volumes {
		if bool(v.External) || v.Driver != "" {
			t.Errorf("volume %s: external or driver set (%+v)", name, v)
		}
	}
	var vols []string
	for name := range project.Volumes {
		vols = append(vols, name)
	}
	sort.Strings(vols)
	if want := []string{"backups", "certificates", "db", "frontdoor", "keeper", "redis", "system", "tor"}; !slices.Equal(vols, want) {
		t.Errorf("volumes %v, want %v", vols, want)
	}

	mounts := func(service string) map[string]types.ServiceVolumeConfig {
		m := map[string]types.ServiceVolumeConfig{}
		for _, v := range project.Services[service].Volumes {
			m[v.Target] = v
		}
		return m
	}
	for _, s := range []string{"keeper", "web", "sidekiq", "streaming", "db"} {
		if v, ok := mounts(s)["/var/lib/mastokeeper"]; !ok || v.Source != "keeper" {
			t.Errorf("%s: volume keeper must be mounted at /var/lib/mastokeeper", s)
		}
	}
	for _, s := range []string{"keeper", "web", "sidekiq"} {
		if v, ok := mounts(s)["/opt/mastodon/public/system"]; !ok || v.Source != "system" || v.ReadOnly {
			t.Errorf("%s: volume system must be mounted read-write at /opt/mastodon/public/system", s)
		}
	}
	if v, ok := mounts("proxy")["/srv/mastodon/public/system"]; !ok || v.Source != "system" || !v.ReadOnly {
		t.Errorf("proxy: volume system must be mounted read-only at /srv/mastodon/public/system")
	}
	if v, ok := mounts("db")["/var/lib/postgresql/data"]; !ok || v.Source != "db" {
		t.Errorf("db: volume db must be mounted at /var/lib/postgresql/data")
	}
	if v, ok := mounts("redis")["/data"]; !ok || v.Source != "redis" {
		t.Errorf("redis: volume redis must be mounted at /data")
	}
	// Caddy's certificates and ACME account outlive the container.
	if v, ok := mounts("proxy")["/data"]; !ok || v.Source != "certificates" || v.ReadOnly {
		t.Errorf("proxy: volume certificates must be mounted read-write at /data")
	}
	// The onion key: tor's, and the keeper's to back up and restore. Never
	// in the proxy, which holds no secret.
	for _, s := range []string{"tor", "keeper"} {
		if v, ok := mounts(s)["/var/lib/tor"]; !ok || v.Source != "tor" || v.ReadOnly {
			t.Errorf("%s: volume tor must be mounted read-write at /var/lib/tor", s)
		}
	}
	for name := range project.Services {
		for _, v := range project.Services[name].Volumes {
			if (v.Source == "tor" || v.Source == "keeper") && (name == "proxy" || name == "cloudflared") {
				t.Errorf("%s mounts the %s volume, which holds secrets", name, v.Source)
			}
		}
	}

	// Healthchecks: the engine restarts an unhealthy container, so a long
	// first boot (migrations, asset checks) must fit in start_period.
	for _, s := range []string{"web", "streaming", "sidekiq", "db"} {
		hc := project.Services[s].HealthCheck
		if hc == nil || hc.Disable || len(hc.Test) < 2 {
			t.Errorf("%s: no healthcheck", s)
			continue
		}
		if hc.Test[0] != "CMD" {
			t.Errorf("%s: healthcheck %v should be exec form (CMD), no shell", s, hc.Test)
		}
		if hc.StartPeriod == nil || time.Duration(*hc.StartPeriod) < 5*time.Minute {
			t.Errorf("%s: healthcheck start_period %v, want >= 5m", s, hc.StartPeriod)
		}
	}
	for _, s := range []string{"web", "streaming", "sidekiq"} {
		if hc := project.Services[s].HealthCheck; hc != nil && hc.Test[1] != "mastokeeper" {
			t.Errorf("%s: healthcheck %v should run mastokeeper (no curl dependency)", s, hc.Test)
		}
	}

	// Commands: every Mastodon process and PostgreSQL start through mastokeeper.
	wantCmd := map[string][]string{
		"keeper":    {"mastokeeper", "run"},
		"web":       {"mastokeeper", "launch", "mastodon", "--", "bundle", "exec", "puma", "-C", "config/puma.rb"},
		"sidekiq":   {"mastokeeper", "launch", "mastodon", "--", "bundle", "exec", "sidekiq"},
		"streaming": {"mastokeeper", "launch", "mastodon", "--", "node", "./streaming/index.js"},
		"db":        {"postgres"},
		"proxy":     {"mastokeeper", "launch", "proxy", "--", "caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"},
		"tor":       {"mastokeeper", "launch", "tor", "--", "tor"},
	}
	for s, want := range wantCmd {
		if got := []string(project.Services[s].Command); !slices.Equal(got, want) {
			t.Errorf("%s: command %q, want %q", s, got, want)
		}
	}
	if got, want := []string(project.Services["db"].Entrypoint), []string{"mastokeeper", "launch", "postgres", "--", "docker-entrypoint.sh"}; !slices.Equal(got, want) {
		t.Errorf("db: entrypoint %q, want %q", got, want)
	}
	if got, want := []string(project.Services["cloudflared"].Entrypoint), []string{"mastokeeper", "launch", "cloudflared", "--", "cloudflared", "--no-autoupdate"}; !slices.Equal(got, want) {
		t.Errorf("cloudflared: entrypoint %q, want %q", got, want)
	}
	if project.Services["keeper"].Labels["io.balena.features.supervisor-api"] != "1" {
		t.Errorf("keeper: label io.balena.features.supervisor-api must be '1'")
	}
	for _, s := range []string{"keeper", "db"} {
		if g := project.Services[s].StopGracePeriod; g == nil || time.Duration(*g) < 60*time.Second {
			t.Errorf("%s: stop_grace_period %v, want >= 60s", s, g)
		}
	}
}

// Rules that only the text shows (compose-go fills in or resolves these).
func TestComposeText(t *testing.T) {
	text := stackReadFile(t, "docker-compose.yml")
	if !regexp.MustCompile(`(?m)^version:\s*['"]2\.4['"]\s*$`).MatchString(text) {
		t.Error("docker-compose.yml must say version: '2.4' (balena's parsers)")
	}
	for i, line := range strings.Split(text, "\n") {
		code, _, _ := strings.Cut(line, "#")
		switch {
		case regexp.MustCompile(`^\s*image\s*:`).MatchString(code):
			t.Errorf("line %d: image: pins live only in the Dockerfile", i+1)
		case regexp.MustCompile(`^\s*env_file\s*:`).MatchString(code):
			t.Errorf("line %d: env_file is not supported the same way by balena", i+1)
		case strings.Contains(code, "${") || regexp.MustCompile(`\$[A-Za-z_]`).MatchString(code):
			t.Errorf("line %d: variable substitution %q (balena: don't rely on it)", i+1, strings.TrimSpace(code))
		case regexp.MustCompile(`^\s*condition\s*:`).MatchString(code):
			t.Errorf("line %d: depends_on conditions are rejected by balena", i+1)
		case regexp.MustCompile(`(?i)(password|secret|token|api_?key)\s*[:=]\s*\S`).MatchString(code):
			t.Errorf("line %d: looks like a secret", i+1)
		}
	}
	// The build context is the whole repository: keep the test tool cache out.
	ignore := stackReadFile(t, ".dockerignore")
	for _, want := range []string{".cache", ".git"} {
		if !slices.Contains(strings.Fields(ignore), want) {
			t.Errorf(".dockerignore must list %s (the build context is the repository)", want)
		}
	}
}

// balena.yml: what the deploy button and the dashboard read.
func TestComposeBalenaYml(t *testing.T) {
	var doc struct {
		Name        string `yaml:"name"`
		Type        string `yaml:"type"`
		Description string `yaml:"description"`
		Version     string `yaml:"version"`
		Assets      struct {
			Repository struct {
				Type string `yaml:"type"`
				Data struct {
					URL string `yaml:"url"`
				} `yaml:"data"`
			} `yaml:"repository"`
		} `yaml:"assets"`
		Data struct {
			DefaultDeviceType    string              `yaml:"defaultDeviceType"`
			SupportedDeviceTypes []string            `yaml:"supportedDeviceTypes"`
			Variables            []map[string]string `yaml:"applicationEnvironmentVariables"`
		} `yaml:"data"`
		PostProvisioning string `yaml:"post-provisioning"`
	}
	if err := yaml.Unmarshal([]byte(stackReadFile(t, "balena.yml")), &doc); err != nil {
		t.Fatalf("balena.yml: %v", err)
	}
	if doc.Name == "" || doc.Type != "sw.application" || doc.Description == "" || doc.PostProvisioning == "" {
		t.Errorf("balena.yml: name, type sw.application, description and post-provisioning are required: %+v", doc)
	}
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(doc.Version) {
		t.Errorf("balena.yml: version %q is not semver", doc.Version)
	}
	if doc.Assets.Repository.Type != "blob.asset" || doc.Assets.Repository.Data.URL != "https://github.com/mastodon-on-balena/mastodon-balena" {
		t.Errorf("balena.yml: assets.repository %+v", doc.Assets.Repository)
	}
	if !slices.Contains(doc.Data.SupportedDeviceTypes, doc.Data.DefaultDeviceType) {
		t.Errorf("balena.yml: default device type %q is not among the supported %v", doc.Data.DefaultDeviceType, doc.Data.SupportedDeviceTypes)
	}
	vars := map[string]string{}
	for _, m := range doc.Data.Variables {
		for k, v := range m {
			vars[k] = v
		}
	}
	// The dashboard's defaults must make a configuration the keeper accepts
	// (Mastodon refuses reserved usernames such as "admin").
	if _, err := config.Load(func(k string) string { return vars[k] }); err != nil {
		t.Errorf("balena.yml: its default variables are refused by the keeper: %v", err)
	}
	if vars["ADMIN_USERNAME"] == "" {
		t.Error("balena.yml: ADMIN_USERNAME should be shown with a default, inviting people to pick their own")
	}
	if _, ok := vars["LOCAL_DOMAIN"]; ok {
		t.Error("balena.yml: LOCAL_DOMAIN must have no default (it falls back to the public URL's host)")
	}
	for k := range vars {
		for _, bad := range []string{"PASS", "SECRET", "KEY", "TOKEN"} {
			if strings.Contains(strings.ToUpper(k), bad) {
				t.Errorf("balena.yml: variable %s looks like a secret; secrets have no defaults", k)
			}
		}
	}
}
