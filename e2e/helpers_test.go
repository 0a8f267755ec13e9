package e2e

// Helpers of the stack tests (compose_test.go, pins_test.go, proxy_test.go).
// Every name starts with "stack" so that other tests of this package can pick
// their own names freely.

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// stackRequireServicesEnv makes a missing tool a failure instead of a skip.
const stackRequireServicesEnv = "MASTOKEEPER_TEST_REQUIRE_SERVICES"

// stackMissing skips the test, or fails it when the run requires every tool
// and service (scripts/test sets MASTOKEEPER_TEST_REQUIRE_SERVICES=1).
func stackMissing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv(stackRequireServicesEnv) == "1" {
		t.Fatalf("missing (run scripts/install-test-deps): "+format, args...)
	}
	t.Skipf("missing (run scripts/install-test-deps): "+format, args...)
}

// stackRepoRoot is the repository's root: the nearest directory above the
// test's working directory that holds go.mod.
func stackRepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// stackCacheDir is where scripts/install-test-deps puts the tools it builds.
func stackCacheDir(t testing.TB) string {
	return filepath.Join(stackRepoRoot(t), ".cache")
}

// stackRequireTool finds an executable in .cache/bin or on PATH, or skips/fails.
func stackRequireTool(t testing.TB, name string) string {
	t.Helper()
	cached := filepath.Join(stackCacheDir(t), "bin", name)
	if fi, err := os.Stat(cached); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
		return cached
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	stackMissing(t, "the %q executable (neither in .cache/bin nor on PATH)", name)
	return ""
}

// stackReadFile reads a file given relative to the repository's root.
func stackReadFile(t testing.TB, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stackRepoRoot(t), filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// stackDockerfileLines returns the Dockerfile's instructions, one per entry,
// with continuation lines joined and comments dropped.
func stackDockerfileLines(text string) []string {
	var out []string
	var cur strings.Builder
	for _, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if cur.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(line, "#") {
			continue // a comment inside a continued instruction
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\"))
			cur.WriteString(" ")
			continue
		}
		cur.WriteString(line)
		out = append(out, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

var (
	stackArgRe  = regexp.MustCompile(`^(?i:ARG)\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$`)
	stackFromRe = regexp.MustCompile(`^(?i:FROM)\s+(?:--platform=\S+\s+)?(\S+)(?:\s+(?i:AS)\s+(\S+))?\s*$`)
)

// stackDockerfile is what the stack tests read from the Dockerfile.
type stackDockerfile struct {
	Pins    map[string]string // ARGs with a value, before the first FROM
	PinList []string          // their names, in order
	Froms   []stackFrom       // every FROM, in order
	Lines   []string          // every instruction
}

type stackFrom struct {
	Image string // as written, e.g. postgres:${POSTGRES_VERSION}-trixie
	Stage string // the AS name, "" if none
}

// Targets are the stage names that compose's build.target may name.
func (d stackDockerfile) Targets() map[string]bool {
	m := map[string]bool{}
	for _, f := range d.Froms {
		if f.Stage != "" {
			m[f.Stage] = true
		}
	}
	return m
}

func stackParseDockerfile(t testing.TB, text string) stackDockerfile {
	t.Helper()
	d := stackDockerfile{Pins: map[string]string{}, Lines: stackDockerfileLines(text)}
	seenFrom := false
	for _, line := range d.Lines {
		if m := stackFromRe.FindStringSubmatch(line); m != nil {
			seenFrom = true
			d.Froms = append(d.Froms, stackFrom{Image: m[1], Stage: m[2]})
			continue
		}
		if m := stackArgRe.FindStringSubmatch(line); m != nil && !seenFrom {
			if _, dup := d.Pins[m[1]]; dup {
				t.Errorf("Dockerfile: ARG %s is declared twice before the first FROM", m[1])
			}
			d.Pins[m[1]] = m[2]
			d.PinList = append(d.PinList, m[1])
		}
	}
	return d
}
