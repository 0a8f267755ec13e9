package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// emptyEnvironment points everything the keeper could write to at a fresh
// directory, as on a fresh device, and returns it.
func emptyEnvironment(t *testing.T) string {
	dir := t.TempDir()
	t.Setenv("MASTOKEEPER_STATE_DIR", filepath.Join(dir, "state"))
	t.Setenv("BACKUP_TARGET", "file://"+filepath.Join(dir, "target"))
	t.Setenv("MEDIA_DIR", filepath.Join(dir, "media"))
	t.Setenv("BACKUP_PASSPHRASE", "correct horse battery staple")
	t.Setenv("LOCAL_DOMAIN", "social.example.org")
	return dir
}

func TestEveryCommandsHelpPrintsItsOwnUsageAndWritesNothing(t *testing.T) {
	dir := emptyEnvironment(t)
	for _, cmd := range commands {
		words := strings.Fields(cmd.path)
		for _, args := range [][]string{
			append(append([]string{}, words...), "--help"),
			append(append([]string{}, words...), "-h"),
			append([]string{"help"}, words...),
		} {
			var out, errOut bytes.Buffer
			code := run(args, &out, &errOut)
			if code != exitOK {
				t.Errorf("mastokeeper %s: exit %d, want 0\n%s", strings.Join(args, " "), code, errOut.String())
			}
			if !strings.HasPrefix(out.String(), "Usage: mastokeeper "+cmd.path) {
				t.Errorf("mastokeeper %s printed not its own usage:\n%s", strings.Join(args, " "), out.String())
			}
			if !strings.Contains(out.String(), "3 refused") {
				t.Errorf("mastokeeper %s: the help does not give the exit codes", strings.Join(args, " "))
			}
		}
	}
	// With arguments and flags around it, --help still only helps.
	for _, args := range [][]string{
		{"backup", "verify", "latest", "--help"}, {"restore", "--force", "--help"}, {"admin", "reset-password", "--help"},
		{"backup", "list", "--from", "s3://bucket/x", "-h"}, {"tootctl", "-h"}, {"launch", "mastodon", "--help"},
	} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != exitOK || !strings.HasPrefix(out.String(), "Usage: ") {
			t.Errorf("mastokeeper %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
		}
	}
	for _, args := range [][]string{{"--version"}, {"version"}, {"help"}, {"--help"}, {"-h"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != exitOK || out.Len() == 0 {
			t.Errorf("mastokeeper %s: exit %d, %q", strings.Join(args, " "), code, out.String())
		}
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if p != dir {
			t.Errorf("--help wrote %s", p)
		}
		return err
	})
}

func TestAWrongCommandLineIsExitTwoWithTheUsage(t *testing.T) {
	dir := emptyEnvironment(t)
	for args, want := range map[string]string{
		"":                               "Usage:",
		"frobnicate":                     `unknown command "frobnicate"`,
		"backup frobnicate":              `unknown subcommand "frobnicate"`,
		"backup verify":                  "missing argument",
		"backup verify a b":              `unexpected argument "b"`,
		"restore --bogus":                "unknown flag --bogus",
		"restore --backup":               "flag needs an argument",
		"config":                         "Subcommands:",
		"status extra":                   `unexpected argument "extra"`,
		"launch mastodon":                "after --",
		"launch mastodon --":             "missing argument",
		"launch mastodon puma":           "after --",
		"launch nginx -- nginx":          "none of mastodon, postgres, proxy, tor, cloudflared",
		"help frobnicate":                `no command "frobnicate"`,
		"admin reset-password":           "missing argument",
		"admin reset-password alice bob": `unexpected argument "bob"`,
		"backup claim --yes=maybe":       "invalid boolean",
	} {
		var out, errOut bytes.Buffer
		code := run(strings.Fields(args), &out, &errOut)
		if code != exitUsage || !strings.Contains(errOut.String(), want) {
			t.Errorf("mastokeeper %s: exit %d, want 2 and %q in:\n%s", args, code, want, errOut.String())
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("a wrong command line wrote %d files", len(ents))
	}
}

func TestFlagsTakeTheirValueEitherWayAndGoAnywhere(t *testing.T) {
	for _, args := range [][]string{
		{"restore", "--from", "s3://b/p", "--backup", "latest", "--force"},
		{"restore", "--from=s3://b/p", "--backup=latest", "--force"},
		{"restore", "--force", "--backup=latest", "--from", "s3://b/p"},
	} {
		cmd, rest := find(args)
		fs := cmd.flagSet()
		pos, err := cmd.parse(fs, rest)
		if err != nil || len(pos) != 0 {
			t.Fatalf("%v: %v, %v", args, pos, err)
		}
		c := &call{fs: fs}
		if c.str("from") != "s3://b/p" || c.str("backup") != "latest" || !c.on("force") || c.on("trust-old-format") {
			t.Errorf("%v: from %q backup %q force %v", args, c.str("from"), c.str("backup"), c.on("force"))
		}
	}
	cmd, rest := find([]string{"backup", "verify", "latest", "--from", "file:///x"})
	fs := cmd.flagSet()
	pos, err := cmd.parse(fs, rest)
	if err != nil || len(pos) != 1 || pos[0] != "latest" || fs.Lookup("from").Value.String() != "file:///x" {
		t.Errorf("a flag after the ID: %v %v", pos, err)
	}
	cmd, rest = find([]string{"launch", "mastodon", "--", "bundle", "exec", "puma", "--help"})
	pos, err = cmd.parse(cmd.flagSet(), rest)
	if err != nil || strings.Join(pos, " ") != "mastodon bundle exec puma --help" {
		t.Errorf("after --, everything is the launched command's: %v %v", pos, err)
	}
	cmd, rest = find([]string{"tootctl", "accounts", "modify", "alice", "--role", "Moderator"})
	if pos, err = cmd.parse(cmd.flagSet(), rest); err != nil || strings.Join(pos, " ") != "accounts modify alice --role Moderator" {
		t.Errorf("tootctl's arguments are tootctl's: %v %v", pos, err)
	}
}

// mentionRe finds a command line a message or the README tells a person to
// run: 'mastokeeper ...', `mastokeeper ...` or "mastokeeper ...".
var mentionRe = regexp.MustCompile("['`\"]mastokeeper ([^'`\"\n]*)['`\"]")

func TestEveryMastokeeperCommandNamedInAMessageOrTheReadmeIsReal(t *testing.T) {
	root := filepath.Join("..", "..")
	var files []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if d.IsDir() && (d.Name() == ".cache" || d.Name() == ".git" || d.Name() == "e2e") {
			return filepath.SkipDir
		}
		if strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") || d.Name() == "README.md" {
			files = append(files, p)
		}
		return err
	})
	seen := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mentionRe.FindAllStringSubmatch(string(b), -1) {
			line := m[1]
			if strings.HasPrefix(line, "snapshot authentication") || // the HKDF info string
				strings.ContainsAny(line, "%\\") || !regexp.MustCompile(`^([a-z]|--version)`).MatchString(line) { // a format string
				continue
			}
			seen++
			if err := checkMention(line); err != "" {
				t.Errorf("%s: 'mastokeeper %s': %s", f, line, err)
			}
		}
	}
	if seen < 20 {
		t.Errorf("only %d mentions found: is the pattern still right?", seen)
	}
}

// checkMention says what is wrong with a command line as written in a
// message: an unknown command, flag or a positional argument where none
// is taken. Placeholders (ID, URL, NAME, ...) and %s stand for values.
func checkMention(line string) string {
	words := strings.Fields(strings.NewReplacer("\\|", "|", "[", " ", "]", " ").Replace(line))
	var cmdWords []string
	for _, w := range words {
		if strings.HasPrefix(w, "-") || strings.ContainsAny(w, "%.=/:|") || strings.ToUpper(w) == w {
			break
		}
		cmdWords = append(cmdWords, w)
	}
	cmd, rest := find(cmdWords)
	if cmd == nil && len(words) > 0 && (words[0] == "help" || words[0] == "--version") {
		return ""
	}
	if cmd == nil {
		return "no such command"
	}
	if len(rest) > 0 && cmd.maxArgs == 0 {
		return "no such subcommand: " + rest[0]
	}
	fs := cmd.flagSet()
	for _, w := range words {
		if name, ok := strings.CutPrefix(w, "--"); ok && !cmd.passthrough && name != "" && name != "help" {
			name, _, _ = strings.Cut(name, "=")
			if fs.Lookup(name) == nil {
				return "no flag --" + name + " on 'mastokeeper " + cmd.path + "'"
			}
		}
	}
	return ""
}
