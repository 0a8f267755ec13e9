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

	"github.com/mastodon-on-balena/mastodon-balena/bytesize"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// TargetVar is the variable that names the backup target.
const TargetVar = "BACKUP_TARGET"

// TargetExample is a good BACKUP_TARGET value, shown in errors.
const TargetExample = "s3://my-bucket/mastodon"

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
	Check func(t Target, getenv func(string) string) []problem.Problem
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
// *problem.ProblemsError listing every problem at once. Open makes no network
// request; errors and String() never contain a credential.
func Open(ctx context.Context, rawURL string, getenv func(string) string) (Store, error) {
	t, b, problems := parse(rawURL)
	if len(problems) == 0 && b.Check != nil {
		problems = b.Check(t, getenv)
	}
	if len(problems) > 0 {
		return nil, problem.List(problems)
	}
	s, err := b.Open(ctx, t, getenv)
	if err != nil {
		return nil, fmt.Errorf("%s=%s: %w", TargetVar, t, err)
	}
	return s, nil
}

// Check lists every problem with BACKUP_TARGET (rawURL) and the variables of
// its backend, without network access; nil when all is well.
func Check(rawURL string, getenv func(string) string) []problem.Problem {
	t, b, problems := parse(rawURL)
	if len(problems) > 0 {
		return problems
	}
	return b.Check(t, getenv)
}

// ParseTarget parses a BACKUP_TARGET value, independently of the backends
// registered.
func ParseTarget(rawURL string) (Target, []problem.Problem) {
	return parseTarget(rawURL)
}

func parse(rawURL string) (Target, Backend, []problem.Problem) {
	t, problems := parseTarget(rawURL)
	if len(problems) > 0 {
		return t, Backend{}, problems
	}
	b, ok := lookup(t.Scheme)
	if !ok {
		return t, Backend{}, []problem.Problem{targetProblem(fmt.Sprintf("%q: unknown scheme %q; %s", RedactURL(rawURL), t.Scheme, schemesHint()))}
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

func targetProblem(what string) problem.Problem {
	return problem.Problem{Var: TargetVar, What: what, Example: TargetExample}
}

func parseTarget(rawURL string) (Target, []problem.Problem) {
	shown := strconv.Quote(RedactURL(rawURL))
	if strings.TrimSpace(rawURL) == "" {
		return Target{}, []problem.Problem{targetProblem("is empty; it names where backups go: " + schemesHint())}
	}
	if strings.TrimSpace(rawURL) != rawURL {
		return Target{}, []problem.Problem{targetProblem(shown + " has spaces around it")}
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's message repeats the URL: keep only its reason.
		var ue *url.Error
		reason := err.Error()
		if errors.As(err, &ue) {
			reason = ue.Err.Error()
		}
		return Target{}, []problem.Problem{targetProblem(fmt.Sprintf("%s is not a URL (%s)", shown, Redact(reason)))}
	}
	if u.Scheme == "" {
		return Target{}, []problem.Problem{targetProblem(shown + " has no scheme; " + schemesHint())}
	}
	t := Target{Scheme: strings.ToLower(u.Scheme)}
	var problems []problem.Problem
	example := TargetExample
	if b, ok := lookup(t.Scheme); ok && b.Example != "" {
		example = b.Example
	}
	add := func(what string) {
		problems = append(problems, problem.Problem{Var: TargetVar, What: shown + " " + what, Example: example})
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

// SizeVar reads a size variable through getenv: def when unset, else
// bytesize.Parse within [min, max]. It returns a Problem (and def) when the value
// is bad.
func SizeVar(getenv func(string) string, name string, def, min, max int64) (int64, *problem.Problem) {
	v := getenv(name)
	if v == "" {
		return def, nil
	}
	n, err := bytesize.Parse(v)
	bad := func(what string) (int64, *problem.Problem) {
		return def, &problem.Problem{Var: name, What: what, Example: bytesize.Format(def)}
	}
	if err != nil {
		return bad(err.Error())
	}
	if n < min {
		return bad(fmt.Sprintf("%q is below the minimum, %s", v, bytesize.Format(min)))
	}
	if n > max {
		return bad(fmt.Sprintf("%q is above the maximum, %s", v, bytesize.Format(max)))
	}
	return n, nil
}
