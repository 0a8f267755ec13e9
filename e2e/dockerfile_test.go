package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// The Dockerfile as Docker's own builder (BuildKit) reads it: it parses
// without warnings, every stage the compose file builds exists, COPY --from
// names an earlier stage, and each COPY source is in the build context.
func TestDockerfileParsesAsBuildKitReadsIt(t *testing.T) {
	root := stackRepoRoot(t)
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("BuildKit cannot parse the Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("BuildKit warns: %s", w.Short)
	}
	var lints []string
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, _ []parser.Range) {
		lints = append(lints, rule+": "+msg)
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("BuildKit rejects the Dockerfile: %v", err)
	}
	for _, l := range lints {
		t.Errorf("BuildKit lint: %s", l)
	}

	var seen []string
	ignored := stackReadFile(t, ".dockerignore")
	for _, st := range stages {
		for _, cmd := range st.Commands {
			c, ok := cmd.(*instructions.CopyCommand)
			if !ok {
				continue
			}
			if c.From != "" {
				if !slices.Contains(seen, c.From) {
					t.Errorf("stage %s: COPY --from=%s names no earlier stage", st.Name, c.From)
				}
				continue
			}
			for _, src := range c.SourcePaths {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("stage %s: COPY %s: not in the build context", st.Name, src)
				}
				if strings.Contains(ignored, strings.TrimSuffix(src, "/")+"\n") {
					t.Errorf("stage %s: COPY %s is excluded by .dockerignore", st.Name, src)
				}
			}
		}
		seen = append(seen, st.Name)
	}
	for _, target := range []string{"db", "redis", "mastodon", "streaming", "proxy"} {
		if !slices.Contains(seen, target) {
			t.Errorf("no stage %q for docker-compose.yml to build", target)
		}
	}
}
