package sizing

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// value returns the setting named v from the plan, failing when absent.
func value(t *testing.T, p Plan, v string) Setting {
	t.Helper()
	for _, s := range append(append([]Setting{}, p.Mastodon...), p.Postgres...) {
		if s.Var == v {
			return s
		}
	}
	t.Fatalf("plan has no %s", v)
	return Setting{}
}

const mib = 1 << 20

func TestFor_PicksTheTierByMemory(t *testing.T) {
	tests := []struct {
		name      string
		mem       uint64
		tier      string
		web       string
		sidekiq   string
		sharedBuf string
		maxConn   string
	}{
		{"2 GB Pi (1.8 GiB)", 1843 * mib, "small", "0", "5", "128MB", "50"},
		{"just under 3 GiB", 3*gib - 1, "small", "0", "5", "128MB", "50"},
		{"exactly 3 GiB", 3 * gib, "medium", "1", "10", "256MB", "100"},
		{"4 GB Pi (3.7 GiB)", 3789 * mib, "medium", "1", "10", "256MB", "100"},
		{"just under 6 GiB", 6*gib - 1, "medium", "1", "10", "256MB", "100"},
		{"exactly 6 GiB", 6 * gib, "large", "2", "15", "1GB", "100"},
		{"8 GB Pi (7.6 GiB)", 7782 * mib, "large", "2", "15", "1GB", "100"},
		{"16 GiB", 16 * gib, "large", "2", "15", "1GB", "100"},
		{"zero (unknown)", 0, "small", "0", "5", "128MB", "50"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := For(tc.mem, envOf(nil))
			if !strings.HasPrefix(p.Tier, tc.tier) {
				t.Errorf("tier = %q; want %s", p.Tier, tc.tier)
			}
			if p.MemTotal != tc.mem {
				t.Errorf("MemTotal = %d; want %d", p.MemTotal, tc.mem)
			}
			for v, want := range map[string]string{
				"WEB_CONCURRENCY":          tc.web,
				"MAX_THREADS":              "5",
				"SIDEKIQ_CONCURRENCY":      tc.sidekiq,
				"DB_POOL":                  tc.sidekiq, // max(5, sidekiq)
				"POSTGRES_SHARED_BUFFERS":  tc.sharedBuf,
				"POSTGRES_MAX_CONNECTIONS": tc.maxConn,
			} {
				if s := value(t, p, v); s.Value != want || s.Overridden {
					t.Errorf("%s = %q (overridden %v); want %q, derived", v, s.Value, s.Overridden, want)
				}
			}
		})
	}
}

func TestFor_ListsEverySettingOnce(t *testing.T) {
	p := For(4*gib, envOf(nil))
	var m, pg []string
	for _, s := range p.Mastodon {
		m = append(m, s.Var)
	}
	for _, s := range p.Postgres {
		pg = append(pg, s.Var)
	}
	if !slices.Equal(m, []string{"WEB_CONCURRENCY", "MAX_THREADS", "SIDEKIQ_CONCURRENCY", "DB_POOL"}) {
		t.Errorf("Mastodon settings = %v", m)
	}
	if !slices.Equal(pg, []string{"POSTGRES_SHARED_BUFFERS", "POSTGRES_EFFECTIVE_CACHE_SIZE", "POSTGRES_WORK_MEM", "POSTGRES_MAINTENANCE_WORK_MEM", "POSTGRES_MAX_CONNECTIONS"}) {
		t.Errorf("Postgres settings = %v", pg)
	}
}

func TestFor_DBPoolCoversTheLargerOfThreadsAndSidekiqConcurrency(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "5"}, // small tier: 5 threads, 5 sidekiq
		{map[string]string{"MAX_THREADS": "12"}, "12"},
		{map[string]string{"SIDEKIQ_CONCURRENCY": "25"}, "25"},
		{map[string]string{"MAX_THREADS": "8", "SIDEKIQ_CONCURRENCY": "3"}, "8"},
		{map[string]string{"MAX_THREADS": "8", "SIDEKIQ_CONCURRENCY": "30", "DB_POOL": "40"}, "40"},
	}
	for _, tc := range tests {
		p := For(2*gib, envOf(tc.env))
		if s := value(t, p, "DB_POOL"); s.Value != tc.want {
			t.Errorf("with %v: DB_POOL = %s; want %s", tc.env, s.Value, tc.want)
		}
	}
}

func TestFor_OverridesAreKeptAndMarked(t *testing.T) {
	p := For(16*gib, envOf(map[string]string{
		"WEB_CONCURRENCY":         "4",
		"POSTGRES_SHARED_BUFFERS": "2GB",
		"UNRELATED":               "x",
	}))
	for _, s := range append(append([]Setting{}, p.Mastodon...), p.Postgres...) {
		switch s.Var {
		case "WEB_CONCURRENCY":
			if s.Value != "4" || !s.Overridden {
				t.Errorf("WEB_CONCURRENCY = %+v; want 4, overridden", s)
			}
		case "POSTGRES_SHARED_BUFFERS":
			if s.Value != "2GB" || !s.Overridden {
				t.Errorf("POSTGRES_SHARED_BUFFERS = %+v; want 2GB, overridden", s)
			}
		default:
			if s.Overridden {
				t.Errorf("%s is marked overridden but was not set", s.Var)
			}
		}
	}
}

func TestPlanString_MarksWhatThePersonSet(t *testing.T) {
	p := For(2*gib, envOf(map[string]string{"SIDEKIQ_CONCURRENCY": "7"}))
	s := p.String()
	for _, want := range []string{
		"2.0 GiB", "small",
		"SIDEKIQ_CONCURRENCY=7 (set by you)",
		"WEB_CONCURRENCY=0 ",
		"DB_POOL=7 ",
		"POSTGRES_SHARED_BUFFERS=128MB",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("String() = %q; want it to contain %q", s, want)
		}
	}
	if n := strings.Count(s, "(set by you)"); n != 1 {
		t.Errorf("String() marks %d values as set by you; want 1: %q", n, s)
	}
}

func TestPostgresArgs_RendersLowerCaseSettingPairs(t *testing.T) {
	p := For(2*gib, envOf(map[string]string{"POSTGRES_WORK_MEM": "16MB"}))
	want := []string{
		"-c", "shared_buffers=128MB",
		"-c", "effective_cache_size=512MB",
		"-c", "work_mem=16MB",
		"-c", "maintenance_work_mem=64MB",
		"-c", "max_connections=50",
	}
	if got := p.PostgresArgs(); !slices.Equal(got, want) {
		t.Errorf("PostgresArgs = %q;\nwant %q", got, want)
	}
}

func TestCheck_GoodValuesPass(t *testing.T) {
	env := map[string]string{
		"WEB_CONCURRENCY":               "0",
		"MAX_THREADS":                   "64",
		"SIDEKIQ_CONCURRENCY":           "1",
		"DB_POOL":                       "200",
		"POSTGRES_SHARED_BUFFERS":       "256MB",
		"POSTGRES_EFFECTIVE_CACHE_SIZE": "4GB",
		"POSTGRES_WORK_MEM":             "4096kB",
		"POSTGRES_MAINTENANCE_WORK_MEM": "1TB",
		"POSTGRES_MAX_CONNECTIONS":      "20",
	}
	if ps := Check(envOf(env)); len(ps) != 0 {
		t.Errorf("Check = %+v; want no problems", ps)
	}
	if ps := Check(envOf(nil)); len(ps) != 0 {
		t.Errorf("Check(empty) = %+v; want no problems", ps)
	}
}

func TestCheck_ReportsEveryBadOverrideAtOnce(t *testing.T) {
	env := map[string]string{
		"WEB_CONCURRENCY":               "-1",
		"MAX_THREADS":                   "0",
		"SIDEKIQ_CONCURRENCY":           "ten",
		"DB_POOL":                       "201",
		"POSTGRES_SHARED_BUFFERS":       "256",
		"POSTGRES_EFFECTIVE_CACHE_SIZE": "4 furlongs",
		"POSTGRES_WORK_MEM":             "lots",
		"POSTGRES_MAINTENANCE_WORK_MEM": "-1GB",
		"POSTGRES_MAX_CONNECTIONS":      "19",
	}
	ps := Check(envOf(env))
	got := map[string]problem.Problem{}
	for _, p := range ps {
		got[p.Var] = p
	}
	if len(ps) != len(env) || len(got) != len(env) {
		t.Errorf("got %d problems (%d variables); want one for each of %d variables: %+v", len(ps), len(got), len(env), ps)
	}
	for v, bad := range env {
		p, ok := got[v]
		if !ok {
			t.Errorf("%s=%q was not reported", v, bad)
			continue
		}
		if !strings.Contains(p.What, bad) {
			t.Errorf("%s: What = %q; want it to quote the bad value %q", v, p.What, bad)
		}
		if p.Example == "" {
			t.Errorf("%s: no example", v)
		} else if ok := Check(envOf(map[string]string{v: p.Example})); len(ok) != 0 {
			t.Errorf("%s: example %q is itself rejected: %+v", v, p.Example, ok)
		}
	}
}

func TestPostgresSizesTakeIECUnitsAndArePassedInPostgresUnits(t *testing.T) {
	env := map[string]string{"POSTGRES_SHARED_BUFFERS": "256MiB", "POSTGRES_WORK_MEM": "4 mb", "POSTGRES_EFFECTIVE_CACHE_SIZE": "1.5GiB"}
	if ps := Check(envOf(env)); len(ps) != 0 {
		t.Fatalf("refused: %+v", ps)
	}
	args := strings.Join(For(4<<30, envOf(env)).PostgresArgs(), " ")
	for _, want := range []string{"shared_buffers=256MB", "work_mem=4MB", "effective_cache_size=1536MB"} {
		if !strings.Contains(args, want) {
			t.Errorf("PostgreSQL arguments %q lack %s", args, want)
		}
	}
}

func TestParseMemTotal(t *testing.T) {
	sample := `MemTotal:        3884736 kB
MemFree:          214340 kB
MemAvailable:    2473128 kB
Buffers:          104156 kB
`
	n, err := parseMemTotal(strings.NewReader(sample))
	if err != nil || n != 3884736*1024 {
		t.Errorf("parseMemTotal = %d, %v; want %d", n, err, 3884736*1024)
	}
}

func TestParseMemTotal_LineNeedNotBeFirst(t *testing.T) {
	n, err := parseMemTotal(strings.NewReader("MemFree: 1 kB\nMemTotal: 2048 kB\n"))
	if err != nil || n != 2048*1024 {
		t.Errorf("parseMemTotal = %d, %v; want %d", n, err, 2048*1024)
	}
}

func TestParseMemTotal_Garbage(t *testing.T) {
	for name, in := range map[string]string{
		"empty":       "",
		"no MemTotal": "MemFree: 1 kB\nSwapTotal: 0 kB\n",
		"bad number":  "MemTotal: lots kB\n",
		"negative":    "MemTotal: -5 kB\n",
		"binary":      "\x00\x01\x02",
	} {
		if n, err := parseMemTotal(strings.NewReader(in)); err == nil {
			t.Errorf("%s: parseMemTotal = %d, nil; want an error", name, n)
		} else if !strings.Contains(err.Error(), "memory") {
			t.Errorf("%s: error %q does not say what was being read", name, err)
		}
	}
}

func TestMemTotal_ReadsAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meminfo")
	if err := os.WriteFile(path, []byte("MemTotal: 1024 kB\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := MemTotal(path); err != nil || n != 1<<20 {
		t.Errorf("MemTotal = %d, %v; want 1 MiB", n, err)
	}
	if _, err := MemTotal(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("MemTotal of a missing file: want an error")
	}
}
