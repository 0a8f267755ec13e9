package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// command is one command of the tree: its words ("backup list"), its
// flags and arguments, and what it runs. Each has its own flag.FlagSet, so
// -h/--help prints its usage and nothing runs.
type command struct {
	path     string // "backup verify"
	synopsis string // "[--from URL] ID|latest"
	summary  string // one line, for the overview
	help     string // what it does, in full
	// minArgs and maxArgs bound the positional arguments (-1: no bound).
	minArgs, maxArgs int
	// passthrough: every argument after the command belongs to the program
	// it runs (tootctl); only a lone -h/--help is the command's own.
	passthrough bool
	// dashDash: the arguments after a "--" belong to the program it runs
	// (launch); the ones before are the command's.
	dashDash bool
	flags    func(fs *flag.FlagSet)
	run      func(c *call) error
}

// flagSet builds the command's flags.
func (cmd *command) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("mastokeeper "+cmd.path, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and usage are printed by run
	fs.Usage = func() {}
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	return fs
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// parse reads flags anywhere among the arguments (--flag value and
// --flag=value); everything after a "--" is positional.
func (cmd *command) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	if cmd.passthrough {
		if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			return nil, flag.ErrHelp
		}
		return args, nil
	}
	var pos, tail []string
	for i, a := range args {
		if a == "--" {
			args, tail = args[:i], args[i+1:]
			break
		}
	}
	if cmd.dashDash && tail == nil && len(args) > 0 {
		for _, a := range args {
			if a == "-h" || a == "--help" || a == "-help" {
				return nil, flag.ErrHelp
			}
		}
		return nil, usagef("the command to launch goes after --, as in: mastokeeper launch mastodon -- bundle exec puma")
	}
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return append(pos, tail...), nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

func (cmd *command) checkArgs(pos []string) error {
	switch {
	case len(pos) < cmd.minArgs:
		return usagef("missing argument")
	case cmd.maxArgs >= 0 && len(pos) > cmd.maxArgs:
		if cmd.maxArgs == 0 && len(subcommands(cmd.path)) > 0 {
			return usagef("unknown subcommand %q", pos[0])
		}
		return usagef("unexpected argument %q", pos[cmd.maxArgs])
	}
	return nil
}

// usage is the command's help: synopsis, what it does, flags, exit codes.
func (cmd *command) usage() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Usage: mastokeeper %s", cmd.path)
	if cmd.synopsis != "" {
		b.WriteString(" " + cmd.synopsis)
	}
	b.WriteString("\n\n")
	b.WriteString(wrap(cmd.help, 76))
	if subs := subcommands(cmd.path); len(subs) > 0 {
		b.WriteString("\nSubcommands:\n")
		for _, s := range subs {
			writeEntry(&b, strings.TrimSpace("mastokeeper "+s.path+" "+s.synopsis), s.summary)
		}
	}
	fs := cmd.flagSet()
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			b.WriteString("\nFlags:\n")
			first = false
		}
		name := "--" + f.Name
		if !isBool(f) {
			arg, text := flag.UnquoteUsage(f)
			name += " " + strings.ToUpper(arg)
			writeEntry(&b, name, text)
			return
		}
		writeEntry(&b, name, f.Usage)
	})
	b.WriteString("\n" + wrap(exitCodesHelp, 76))
	return b.String()
}

// writeEntry writes "  name   text", the text wrapped in a column of its
// own, starting on the next line when name is long.
func writeEntry(b *strings.Builder, name, text string) {
	const col = 34
	lines := strings.Split(strings.TrimSpace(wrap(text, 78-col)), "\n")
	if len(name) > col-3 {
		fmt.Fprintf(b, "  %s\n", name)
	} else {
		fmt.Fprintf(b, "  %-*s", col-2, name)
		fmt.Fprintln(b, lines[0])
		lines = lines[1:]
	}
	for _, l := range lines {
		fmt.Fprintf(b, "%*s%s\n", col, "", l)
	}
}

// wrap breaks text into lines of at most width, keeping blank lines.
func wrap(text string, width int) string {
	var b strings.Builder
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		line := 0
		for _, w := range strings.Fields(para) {
			if line > 0 && line+1+len(w) > width {
				b.WriteString("\n")
				line = 0
			} else if line > 0 {
				b.WriteString(" ")
				line++
			}
			b.WriteString(w)
			line += len(w)
		}
		b.WriteString("\n\n")
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// find picks the command named by the longest run of leading words.
func find(args []string) (*command, []string) {
	var found *command
	n := 0
	for i := 1; i <= len(args); i++ {
		path := strings.Join(args[:i], " ")
		for _, c := range commands {
			if c.path == path {
				found, n = c, i
			}
		}
		if !isPrefix(path) {
			break
		}
	}
	if found == nil {
		return nil, args
	}
	return found, args[n:]
}

func isPrefix(path string) bool {
	for _, c := range commands {
		if strings.HasPrefix(c.path+" ", path+" ") {
			return true
		}
	}
	return false
}

// subcommands are the commands one word below path.
func subcommands(path string) []*command {
	var subs []*command
	for _, c := range commands {
		if rest, ok := strings.CutPrefix(c.path, path+" "); ok && !strings.Contains(rest, " ") {
			subs = append(subs, c)
		}
	}
	return subs
}

// overview lists every command.
func overview() string {
	var b strings.Builder
	b.WriteString("mastokeeper - keeps a Mastodon instance on balena provisioned, backed up and alive\n\nUsage:\n")
	for _, c := range commands {
		if c.summary == "" {
			continue
		}
		writeEntry(&b, strings.TrimSpace("mastokeeper "+c.path+" "+c.synopsis), c.summary)
	}
	writeEntry(&b, "mastokeeper --version", "which keeper and Mastodon release this is")
	writeEntry(&b, "mastokeeper help COMMAND", "a command's own help (or: COMMAND --help)")
	b.WriteString(`
Everything is configured with environment variables (balena dashboard
variables on a device); see README.md for the list.

` + wrap(exitCodesHelp, 76))
	return b.String()
}
