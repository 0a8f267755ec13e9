package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// TargetVar is the variable that names the backup target.
const TargetVar = "BACKUP_TARGET"

// TargetExample is a good BACKUP_TARGET value, shown in errors.
const TargetExample = "s3://my-bucket/mastodon"

// Problem is one bad variable, as `mastokeeper config check` lists it.
type Problem struct {
	Var     string // the variable, e.g. BACKUP_S3_PART_SIZE
	What    string // what is wrong with it, never containing a secret
	Example string // a good value, e.g. 16MiB
}

// String is "VAR: what (for example VAR=example)".
func (p Problem) String() string {
	if p.Example == "" {
		return p.Var + ": " + p.What
	}
	return fmt.Sprintf("%s: %s (for example %s=%s)", p.Var, p.What, p.Var, p.Example)
}

// ProblemsError is the error Open returns when variables are bad: every
// problem at once.
type ProblemsError struct {
	Problems []Problem
}

func (e *ProblemsError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// Target is a parsed BACKUP_TARGET.
type Target struct {
	Scheme string // "file", "s3", "swift", ...
	// Name is the bucket or container (the URL's host part); empty for file.
	Name string
	// Path is the absolute, cleaned directory of a file:// target.
	Path string
	// Prefix is the cleaned path inside the bucket or container, without
	// leading or trailing '/'; empty for none. Empty for file targets.
	Prefix string
}

// String is the target as a URL, e.g. s3://bucket/prefix or file:///dir.
func (t Target) String() string {
	if t.Scheme == "file" {
		return "file://" + t.Path
	}
	s := t.Scheme + "://" + t.Name
	if t.Prefix != "" {
		s += "/" + t.Prefix
	}
	return s
}

// Backend is one kind of target, registered by its package's init (import
// storage/all to get them all).
type Backend struct {
	Scheme  string // URL scheme, e.g. "s3"
	Example string // an example target URL, e.g. s3://my-bucket/mastodon
	// Check lists every problem with the target and the backend's variables,
	// without network access.
	Check func(t Target, getenv func(string) string) []Problem
	// Open returns the store; it is called only when Check found nothing.
	Open func(ctx context.Context, t Target, getenv func(string) string) (Store, error)
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Backend{}
)

// Register makes a backend available to Open and Check under its scheme.
// It panics on a duplicate scheme (a programming error).
func Register(b Backend) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if b.Scheme == "" || b.Open == nil || b.Check == nil {
		panic("storage: Register: incomplete backend " + strconv.Quote(b.Scheme))
	}
	if _, dup := registry[b.Scheme]; dup {
		panic("storage: Register: scheme registered twice: " + b.Scheme)
	}
	registry[b.Scheme] = b
}

func backends() []Backend {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]Backend, 0, len(registry))
	for _, b := range registry {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Scheme < out[j].Scheme })
	return out
}

func lookup(scheme string) (Backend, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	b, ok := registry[scheme]
	return b, ok
}

// Open returns the store BACKUP_TARGET (rawURL) names, configured from the
// backend's variables read through getenv (os.Getenv in production):
//
//	file:///var/lib/mastokeeper/backups     a directory
//	s3://bucket/optional/prefix             BACKUP_S3_* variables
//	swift://container/optional/prefix       BACKUP_SWIFT_* variables
//
// Backends register themselves: import
// github.com/mastodon-on-balena/mastodon-balena/storage/all (or the one
// backend package you need). A bad URL or bad variables give a
// *ProblemsError listing every problem at once. Open makes no network
// request; errors and String() never contain a credential.
func Open(ctx context.Context, rawURL string, getenv func(string) string) (Store, error) {
	t, b, problems := parse(rawURL)
	if len(problems) == 0 && b.Check != nil {
		problems = b.Check(t, getenv)
	}
	if len(problems) > 0 {
		return nil, &ProblemsError{Problems: problems}
	}
	s, err := b.Open(ctx, t, getenv)
	if err != nil {
		return nil, fmt.Errorf("%s=%s: %w", TargetVar, t, err)
	}
	return s, nil
}

// Check lists every problem with BACKUP_TARGET (rawURL) and the variables of
// its backend, without network access; nil when all is well.
func Check(rawURL string, getenv func(string) string) []Problem {
	t, b, problems := parse(rawURL)
	if len(problems) > 0 {
		return problems
	}
	return b.Check(t, getenv)
}

// ParseTarget parses a BACKUP_TARGET value, independently of the backends
// registered.
func ParseTarget(rawURL string) (Target, []Problem) {
	return parseTarget(rawURL)
}

func parse(rawURL string) (Target, Backend, []Problem) {
	t, problems := parseTarget(rawURL)
	if len(problems) > 0 {
		return t, Backend{}, problems
	}
	b, ok := lookup(t.Scheme)
	if !ok {
		return t, Backend{}, []Problem{targetProblem(fmt.Sprintf("%q: unknown scheme %q; %s", RedactURL(rawURL), t.Scheme, schemesHint()))}
	}
	return t, b, nil
}

func schemesHint() string {
	bs := backends()
	if len(bs) == 0 {
		return "no backend is compiled in (import storage/all)"
	}
	ex := make([]string, len(bs))
	for i, b := range bs {
		ex[i] = b.Example
	}
	return "use one of " + strings.Join(ex, ", ")
}

func targetProblem(what string) Problem {
	return Problem{Var: TargetVar, What: what, Example: TargetExample}
}

func parseTarget(rawURL string) (Target, []Problem) {
	shown := strconv.Quote(RedactURL(rawURL))
	if strings.TrimSpace(rawURL) == "" {
		return Target{}, []Problem{targetProblem("is empty; it names where backups go: " + schemesHint())}
	}
	if strings.TrimSpace(rawURL) != rawURL {
		return Target{}, []Problem{targetProblem(shown + " has spaces around it")}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's message repeats the URL: keep only its reason.
		var ue *url.Error
		reason := err.Error()
		if errors.As(err, &ue) {
			reason = ue.Err.Error()
		}
		return Target{}, []Problem{targetProblem(fmt.Sprintf("%s is not a URL (%s)", shown, Redact(reason)))}
	}
	if u.Scheme == "" {
		return Target{}, []Problem{targetProblem(shown + " has no scheme; " + schemesHint())}
	}
	t := Target{Scheme: strings.ToLower(u.Scheme)}
	var problems []Problem
	example := TargetExample
	if b, ok := lookup(t.Scheme); ok && b.Example != "" {
		example = b.Example
	}
	add := func(what string) {
		problems = append(problems, Problem{Var: TargetVar, What: shown + " " + what, Example: example})
	}
	if u.User != nil {
		add("contains credentials (user info before '@'): set them in the backend's variables (BACKUP_S3_ACCESS_KEY_ID, BACKUP_SWIFT_KEY, ...) instead")
	}
	if u.RawQuery != "" || u.ForceQuery {
		add("has a query string ('?...'); options go in the backend's variables")
	}
	if u.Fragment != "" {
		add("has a fragment ('#...')")
	}
	if u.Opaque != "" {
		add("needs '//' after the scheme, as in " + t.Scheme + "://...")
		return t, problems
	}
	if t.Scheme == "file" {
		if u.Host != "" && u.Host != "localhost" {
			add(fmt.Sprintf("has a host part %q; a file target is an absolute path with three slashes: file:///%s%s", u.Host, u.Host, u.Path))
			return t, problems
		}
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			add("has no absolute path, e.g. file:///var/lib/mastokeeper/backups")
			return t, problems
		}
		t.Path = path.Clean(u.Path)
		return t, problems
	}
	if u.Host == "" {
		what := map[string]string{"s3": "bucket", "swift": "container"}[t.Scheme]
		if what == "" {
			what = "bucket or container"
		}
		add(fmt.Sprintf("names no %s: %s://%s/optional/prefix", what, t.Scheme, strings.ToUpper(what)))
		return t, problems
	}
	t.Name = u.Host
	// One '/' each side is syntax; more would be empty segments.
	p := strings.TrimSuffix(strings.TrimPrefix(u.Path, "/"), "/")
	if strings.Contains(u.Path, "//") {
		add("has '//' in its prefix (an empty segment)")
	} else if p != "" {
		if err := checkPath(p, "prefix"); err != nil {
			add("has a bad prefix: " + strings.TrimPrefix(err.Error(), ErrInvalidKey.Error()+": "))
		}
	}
	t.Prefix = p
	return t, problems
}

// ParseSize parses a byte size: a number of bytes ("16777216") or a number
// with a binary unit, case-insensitive: K/KiB, M/MiB, G/GiB, T/TiB
// ("16MiB", "64M", "1GiB"). Decimal units (MB, GB) are refused: they are
// ambiguous.
func ParseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty size")
	}
	i := 0
	for i < len(s) && (s[i] >= '0' && s[i] <= '9') {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%q does not start with a number", s)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: number too large", s)
	}
	unit := strings.ToLower(strings.TrimSpace(s[i:]))
	var mult int64
	switch unit {
	case "", "b":
		mult = 1
	case "k", "kib":
		mult = 1 << 10
	case "m", "mib":
		mult = 1 << 20
	case "g", "gib":
		mult = 1 << 30
	case "t", "tib":
		mult = 1 << 40
	case "kb", "mb", "gb", "tb":
		return 0, fmt.Errorf("%q: use a binary unit (KiB, MiB, GiB)", s)
	default:
		return 0, fmt.Errorf("%q: unknown unit %q (use KiB, MiB or GiB)", s, s[i:])
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return n * mult, nil
}

// FormatSize formats n bytes with the largest binary unit that divides it,
// e.g. 16MiB; the inverse of ParseSize.
func FormatSize(n int64) string {
	for _, u := range []struct {
		s string
		v int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.v && n%u.v == 0 {
			return strconv.FormatInt(n/u.v, 10) + u.s
		}
	}
	return strconv.FormatInt(n, 10)
}

// SizeVar reads a size variable through getenv: def when unset, else
// ParseSize within [min, max]. It returns a Problem (and def) when the value
// is bad.
func SizeVar(getenv func(string) string, name string, def, min, max int64) (int64, *Problem) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := ParseSize(v)
	bad := func(what string) (int64, *Problem) {
		return def, &Problem{Var: name, What: what, Example: FormatSize(def)}
	}
	if err != nil {
		return bad("is not a size: " + err.Error())
	}
	if n < min {
		return bad(fmt.Sprintf("%q is below the minimum, %s", v, FormatSize(min)))
	}
	if n > max {
		return bad(fmt.Sprintf("%q is above the maximum, %s", v, FormatSize(max)))
	}
	return n, nil
}
