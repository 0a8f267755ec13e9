package postgres

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
)

var toolVersion = regexp.MustCompile(`\(PostgreSQL\) ([0-9]+)`)

// ToolMajor is the major version of a PostgreSQL client tool on the PATH
// (pg_dump, pg_restore), from its --version.
func ToolMajor(ctx context.Context, tool string) (int, error) {
	out, err := exec.CommandContext(ctx, tool, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", tool, err)
	}
	return parseToolMajor(tool, out)
}

func parseToolMajor(tool string, out []byte) (int, error) {
	v := toolVersion.FindSubmatch(out)
	if v == nil {
		return 0, fmt.Errorf("%s --version: no version in %q", tool, out)
	}
	return strconv.Atoi(string(v[1]))
}
