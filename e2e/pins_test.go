package e2e

// Every version of the stack is pinned once, in the ARG block at the top of
// the Dockerfile. These tests fail when something else disagrees with it.

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// stackPinFormats are the pins and the form of their values.
var stackPinFormats = map[string]*regexp.Regexp{
	"GO_VERSION":       regexp.MustCompile(`^\d+\.\d+\.\d+$`),
	"MASTODON_VERSION": regexp.MustCompile(`^v\d+\.\d+\.\d+$`),
	"POSTGRES_VERSION": regexp.MustCompile(`^\d+\.\d+$`),
	"REDIS_VERSION":    regexp.MustCompile(`^\d+\.\d+\.\d+$`),
	"CADDY_VERSION":    regexp.MustCompile(`^\d+\.\d+\.\d+$`),
	// cloudflared's versions are dates: 2026.8.2
	"CLOUDFLARED_VERSION": regexp.MustCompile(`^\d{4}\.\d+\.\d+$`),
}

func stackPins(t *testing.T) stackDockerfile {
	t.Helper()
	df := stackParseDockerfile(t, stackReadFile(t, "Dockerfile"))
	for name, re := range stackPinFormats {
		v, ok := df.Pins[name]
		if !ok {
			t.Fatalf("Dockerfile: no ARG %s=... before the first FROM", name)
		}
		if !re.MatchString(v) {
			t.Fatalf("Dockerfile: ARG %s=%q is not a full version (%s)", name, v, re)
		}
	}
	return df
}

func stackMajor(version string) int {
	v := strings.TrimPrefix(version, "v")
	major, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		return -1
	}
	return n
}

func TestPinsDockerfileBlock(t *testing.T) {
	text := stackReadFile(t, "Dockerfile")
	df := stackPins(t)

	// One block at the very top: the first instructions are the pins.
	if len(df.Lines) < len(stackPinFormats) {
		t.Fatal("Dockerfile too short")
	}
	for i := range len(stackPinFormats) {
		if m := stackArgRe.FindStringSubmatch(df.Lines[i]); m == nil || m[2] == "" {
			t.Errorf("Dockerfile instruction %d is %q; the pins must be the first instructions", i+1, df.Lines[i])
		}
	}
	// A later ARG only brings a pin into a stage; it never sets a value.
	seenFrom := false
	for _, line := range df.Lines {
		if stackFromRe.MatchString(line) {
			seenFrom = true
			continue
		}
		if m := stackArgRe.FindStringSubmatch(line); m != nil && seenFrom {
			if strings.Contains(line, "=") {
				t.Errorf("Dockerfile: %q sets a value inside a stage; pins belong in the top block", line)
			}
			if _, ok := df.Pins[m[1]]; !ok {
				t.Errorf("Dockerfile: %q is not a pin of the top block", line)
			}
		}
		// No secret ever in an image.
		up := strings.ToUpper(line)
		if (strings.HasPrefix(up, "ARG ") || strings.HasPrefix(up, "ENV ")) &&
			regexp.MustCompile(`PASS|SECRET|TOKEN|_KEY`).MatchString(up) {
			t.Errorf("Dockerfile: %q looks like a secret in an image", line)
		}
	}

	// Every image comes from a pin, never from a literal or floating tag.
	wantFrom := map[string]string{
		"golang":                              "GO_VERSION",
		"ghcr.io/mastodon/mastodon":           "MASTODON_VERSION",
		"ghcr.io/mastodon/mastodon-streaming": "MASTODON_VERSION",
		"postgres":                            "POSTGRES_VERSION",
		"redis":                               "REDIS_VERSION",
		"caddy":                               "CADDY_VERSION",
		"cloudflare/cloudflared":              "CLOUDFLARED_VERSION",
	}
	stages := map[string]bool{}
	seen := map[string]bool{}
	for _, f := range df.Froms {
		if stages[f.Image] {
			if f.Stage != "" {
				stages[f.Stage] = true
			}
			continue
		}
		repo, tag, ok := strings.Cut(f.Image, ":")
		pin, known := wantFrom[repo]
		switch {
		case !known:
			t.Errorf("Dockerfile: FROM %s is not one of the pinned images", f.Image)
		case !ok || !strings.HasPrefix(tag, "${"+pin+"}"):
			t.Errorf("Dockerfile: FROM %s must take its tag from ${%s}", f.Image, pin)
		}
		seen[repo] = true
		if f.Stage != "" {
			stages[f.Stage] = true
		}
	}
	for repo := range wantFrom {
		if !seen[repo] {
			t.Errorf("Dockerfile: no stage is built FROM %s", repo)
		}
	}
	for _, target := range []string{"build", "mastodon", "streaming", "db", "redis", "proxy", "tor", "cloudflared"} {
		if !stages[target] {
			t.Errorf("Dockerfile: no target %q", target)
		}
	}
	if !strings.Contains(text, "ENV MASTOKEEPER_MASTODON_VERSION=${MASTODON_VERSION}") {
		t.Error("Dockerfile: the Mastodon images must carry ENV MASTOKEEPER_MASTODON_VERSION=${MASTODON_VERSION}")
	}
}

var stackGoDirectiveRe = regexp.MustCompile(`(?m)^go\s+(\S+)\s*$`)
var stackToolchainRe = regexp.MustCompile(`(?m)^toolchain\s+go(\S+)\s*$`)

func TestPinsGoVersionMatchesGoMod(t *testing.T) {
	df := stackPins(t)
	gomod := stackReadFile(t, "go.mod")
	m := stackGoDirectiveRe.FindStringSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	if m[1] != df.Pins["GO_VERSION"] {
		t.Errorf("go.mod says go %s, the Dockerfile builds with GO_VERSION=%s", m[1], df.Pins["GO_VERSION"])
	}
	if tc := stackToolchainRe.FindStringSubmatch(gomod); tc != nil && tc[1] != df.Pins["GO_VERSION"] {
		t.Errorf("go.mod says toolchain go%s, the Dockerfile builds with GO_VERSION=%s", tc[1], df.Pins["GO_VERSION"])
	}
}

// The PostgreSQL client in the Mastodon image (pg_dump for backups) must be of
// the server's major: a dump by an older client than the server fails.
func TestPinsPostgresClientMatchesServer(t *testing.T) {
	df := stackPins(t)
	major := stackMajor(df.Pins["POSTGRES_VERSION"])
	text := strings.Join(df.Lines, "\n")

	literal := regexp.MustCompile(`postgresql-client-(\d+)`).FindAllStringSubmatch(text, -1)
	for _, m := range literal {
		if n, _ := strconv.Atoi(m[1]); n != major {
			t.Errorf("Dockerfile installs postgresql-client-%s, the server is PostgreSQL %d", m[1], major)
		}
	}
	derived := strings.Contains(text, `postgresql-client-${pg_major}`)
	if derived {
		// The derivation itself: pg_major is the part of POSTGRES_VERSION
		// before the first dot, in the same RUN.
		run := ""
		for _, line := range df.Lines {
			if strings.Contains(line, `postgresql-client-${pg_major}`) {
				run = line
			}
		}
		if !strings.Contains(run, `pg_major="${POSTGRES_VERSION%%.*}"`) {
			t.Errorf("Dockerfile: pg_major must be derived as \"${POSTGRES_VERSION%%%%.*}\" in the RUN that installs the client: %s", run)
		}
		if !strings.Contains(run, `test "${client_major}" -ge "${pg_major}"`) {
			t.Errorf("Dockerfile: the client install must assert the client's major >= the server's")
		}
		// The stage must see the pin.
		if !slices.Contains(df.Lines, "ARG POSTGRES_VERSION") {
			t.Error("Dockerfile: the mastodon stage must declare ARG POSTGRES_VERSION to use it")
		}
	}
	if len(literal) == 0 && !derived {
		t.Error("Dockerfile installs no postgresql-client-<major> in the Mastodon image")
	}
	if major < 14 {
		t.Errorf("POSTGRES_VERSION %s: Mastodon 4.5+ needs PostgreSQL >= 14", df.Pins["POSTGRES_VERSION"])
	}
}

// stackVersionMention is a version of a pinned component found in a file.
type stackVersionMention struct {
	pin     string // the Dockerfile ARG it must agree with
	version string
	text    string
}

var stackMentionRes = []struct {
	pin string
	re  *regexp.Regexp
}{
	{"MASTODON_VERSION", regexp.MustCompile(`\bmastodon(?:-streaming)?:(v?\d+\.\d+(?:\.\d+)?)`)},
	{"MASTODON_VERSION", regexp.MustCompile(`\bMASTODON_VERSION\s*[=:]\s*['"]?(v?\d+\.\d+(?:\.\d+)?)`)},
	{"POSTGRES_VERSION", regexp.MustCompile(`\bpostgres:(\d{1,2}(?:\.\d+)?)\b`)},
	{"POSTGRES_VERSION", regexp.MustCompile(`\bpostgresql-client-(\d{1,2})\b`)},
	{"POSTGRES_VERSION", regexp.MustCompile(`\bPOSTGRES_VERSION\s*[=:]\s*['"]?(\d+(?:\.\d+)?)`)},
	{"CADDY_VERSION", regexp.MustCompile(`\bcaddy(?:/v2(?:/cmd/caddy)?)?@v(\d+\.\d+\.\d+)`)},
	{"CADDY_VERSION", regexp.MustCompile(`\bcaddy:(\d+\.\d+(?:\.\d+)?)`)},
	{"CADDY_VERSION", regexp.MustCompile(`\bCADDY_VERSION\s*[=:]\s*['"]?v?(\d+\.\d+(?:\.\d+)?)`)},
	{"REDIS_VERSION", regexp.MustCompile(`\bredis:(\d+\.\d+(?:\.\d+)?)`)},
	{"GO_VERSION", regexp.MustCompile(`\bgolang:(\d+\.\d+(?:\.\d+)?)`)},
}

// stackVersionMentions finds versions of pinned components in a text.
func stackVersionMentions(text string) []stackVersionMention {
	var out []stackVersionMention
	for _, m := range stackMentionRes {
		for _, sub := range m.re.FindAllStringSubmatch(text, -1) {
			out = append(out, stackVersionMention{pin: m.pin, version: sub[1], text: sub[0]})
		}
	}
	return out
}

// stackAgrees: a mention agrees with a pin when it is the pin, or names only
// a prefix of it (postgres:17 for 17.11, redis:7.4 for 7.4.11).
func stackAgrees(pin, mention string) bool {
	p := strings.TrimPrefix(pin, "v")
	m := strings.TrimPrefix(mention, "v")
	return p == m || strings.HasPrefix(p, m+".")
}

func TestPinsScannerCatchesDisagreement(t *testing.T) {
	pins := map[string]string{"MASTODON_VERSION": "v4.6.6", "POSTGRES_VERSION": "17.11", "CADDY_VERSION": "2.11.9", "REDIS_VERSION": "7.4.11", "GO_VERSION": "1.26.8"}
	good := "FROM ghcr.io/mastodon/mastodon:v4.6.6\npostgres:17 and postgresql-client-17, caddy@v2.11.9, caddy:2.11.9-alpine, redis:7.4, golang:1.26.8-trixie, postgres://u@db:5432/x"
	bad := "image: ghcr.io/mastodon/mastodon:v4.6.5\npostgres:16.4\ngo install github.com/caddyserver/caddy/v2/cmd/caddy@v2.10.0\nredis:7.2.5\npostgresql-client-15\ngolang:1.25.1"
	for _, m := range stackVersionMentions(good) {
		if !stackAgrees(pins[m.pin], m.version) {
			t.Errorf("%q wrongly flagged against %s=%s", m.text, m.pin, pins[m.pin])
		}
	}
	flagged := 0
	for _, m := range stackVersionMentions(bad) {
		if !stackAgrees(pins[m.pin], m.version) {
			flagged++
		}
	}
	if flagged != 6 {
		t.Errorf("flagged %d of 6 disagreeing mentions", flagged)
	}
}

func TestPinsNoOtherVersionsInRepo(t *testing.T) {
	df := stackPins(t)
	root := stackRepoRoot(t)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".cache", "node_modules", "vendor", "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		// The pins themselves, go.sum's hashes and tests (whose fixtures may
		// name other versions on purpose) are not mentions.
		if rel == "Dockerfile" || rel == "go.sum" || strings.HasSuffix(rel, "_test.go") {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.Size() > 2<<20 || !info.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if slices.Contains(b, 0) {
			return nil // binary
		}
		for _, m := range stackVersionMentions(string(b)) {
			if !stackAgrees(df.Pins[m.pin], m.version) {
				t.Errorf("%s mentions %q, but the Dockerfile pins %s=%s", rel, m.text, m.pin, df.Pins[m.pin])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
