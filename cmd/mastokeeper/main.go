// Command mastokeeper provisions, launches and looks after the Mastodon
// stack on a balena device (or any Docker host). See README.md.
//
// It only parses arguments, prints and maps errors to exit codes; what it
// does is package keeper's.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/mastodon-on-balena/mastodon-balena/keeper"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// Exit codes: the one map, documented in every command's help.
const (
	exitOK      = 0
	exitFailed  = 1 // it went wrong, or something needs attention (status)
	exitUsage   = 2 // the command line is wrong
	exitRefused = 3 // the configuration, the instance or the target says no; nothing was changed
)

const exitCodesHelp = "Exit status: 0 done, 1 failed (status: something needs attention), 2 wrong command line, 3 refused (nothing was changed; the message says what to fix)."

func main() {
	// A soft limit keeps the garbage of streaming decryption from piling up
	// between collections on a small device; GOMEMLIMIT overrides it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(48 << 20)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError is a wrong command line: exit 2, with the command's usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitCode maps an error to the exit status.
func exitCode(err error) int {
	var u usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &u):
		return exitUsage
	case problem.IsRefused(err):
		return exitRefused
	}
	return exitFailed
}

// call is one invocation of a command.
type call struct {
	ctx            context.Context
	cmd            *command
	fs             *flag.FlagSet
	args           []string // positional arguments
	stdout, stderr io.Writer
	k              *keeper.Keeper
}

func (c *call) str(name string) string { return c.fs.Lookup(name).Value.String() }
func (c *call) on(name string) bool    { return c.fs.Lookup(name).Value.String() == "true" }

// keeper reads the settings (only now: --help reads nothing) and builds
// the keeper.
func (c *call) keeper() *keeper.Keeper {
	if c.k == nil {
		c.k = &keeper.Keeper{S: keeper.LoadEnv(), Log: slog.New(slog.NewTextHandler(c.stderr, nil)), Banner: c.stderr}
		if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && c.stderr == os.Stderr {
			c.k.Terminal = os.Stderr
		}
	}
	return c.k
}

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if len(args) == 0 {
		fmt.Fprint(stderr, overview())
		return exitUsage
	}
	switch args[0] {
	case "--version", "-version", "version":
		fmt.Fprintln(stdout, versionLine())
		return exitOK
	case "help", "-h", "-help", "--help":
		if len(args) == 1 {
			fmt.Fprint(stdout, overview())
			return exitOK
		}
		cmd, rest := find(args[1:])
		if cmd == nil || len(rest) > 0 {
			fmt.Fprintf(stderr, "mastokeeper help: no command %q\n\n%s", strings.Join(args[1:], " "), overview())
			return exitUsage
		}
		fmt.Fprint(stdout, cmd.usage())
		return exitOK
	}
	cmd, rest := find(args)
	if cmd == nil {
		fmt.Fprintf(stderr, "mastokeeper: unknown command %q\n\n%s", args[0], overview())
		return exitUsage
	}
	fs := cmd.flagSet()
	c := &call{ctx: ctx, cmd: cmd, fs: fs, stdout: stdout, stderr: stderr}
	pos, err := cmd.parse(fs, rest)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, cmd.usage())
		return exitOK
	}
	if err == nil {
		c.args = pos
		err = cmd.checkArgs(pos)
	}
	if err != nil {
		msg := strings.Replace(err.Error(), "flag provided but not defined: -", "unknown flag --", 1)
		fmt.Fprintf(stderr, "mastokeeper %s: %s\n\n%s", cmd.path, msg, cmd.usage())
		return exitUsage
	}
	if cmd.run == nil { // a group of subcommands
		fmt.Fprintf(stderr, "mastokeeper %s: which one?\n\n%s", cmd.path, cmd.usage())
		return exitUsage
	}
	err = cmd.run(c)
	if err != nil && !errors.Is(err, errReported) {
		fmt.Fprintf(stderr, "mastokeeper %s: %v\n", cmd.path, err)
	}
	if errors.Is(err, errReported) {
		var r reportedError
		errors.As(err, &r)
		return r.code
	}
	return exitCode(err)
}

// errReported is an outcome the command already told the person about
// (the keeper's log, a healthcheck line); only its exit code remains.
var errReported = errors.New("reported")

type reportedError struct{ code int }

func (reportedError) Error() string   { return "reported" }
func (reportedError) Is(e error) bool { return e == errReported }
func reported(code int) error         { return reportedError{code} }

// versionLine says which keeper and which Mastodon release this is.
func versionLine() string {
	v := "(unknown build)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		v = bi.Main.Version
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " " + s.Value[:12]
			}
		}
	}
	line := "mastokeeper " + v
	if m := os.Getenv("MASTOKEEPER_MASTODON_VERSION"); m != "" {
		line += ", for Mastodon " + m
	}
	return line
}
