// Package e2e drives the built mastokeeper binary the way a device runs it,
// against real PostgreSQL and Redis servers, with Mastodon's own commands
// played by the stand-in in ./standin.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/storage/storagetest"
)

// Built once for the package: the product binary and the stand-in, with a
// directory that puts the stand-in on PATH under Mastodon's command names.
var (
	keeperBin  string
	standinDir string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mastokeeper-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		os.Chmod(dir, 0o755) // the postgres user runs the entrypoint stand-in from here
		keeperBin = filepath.Join(dir, "mastokeeper")
		standinDir = filepath.Join(dir, "standin")
		os.Mkdir(standinDir, 0o755)
		standin := filepath.Join(standinDir, "mastodon-standin")
		for _, b := range [][2]string{{keeperBin, "../cmd/mastokeeper"}, {standin, "./standin"}} {
			cmd := exec.Command("go", "build", "-o", b[0], b[1])
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n%s", b[1], err, out)
				return 1
			}
		}
		for _, name := range []string{"rails", "tootctl", "bundle", "node"} {
			if err := os.Symlink(standin, filepath.Join(standinDir, name)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		// Copied, not linked: the postgres user must be able to read it.
		ep, err := os.ReadFile("standin/docker-entrypoint.sh")
		if err == nil {
			err = os.WriteFile(filepath.Join(standinDir, "docker-entrypoint.sh"), ep, 0o755)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer storagetest.StopShared()
		return m.Run()
	}()
	os.Exit(code)
}
