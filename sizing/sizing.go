// Package sizing derives process and PostgreSQL settings from the device's
// memory, so that a 2 GB Raspberry Pi and an 8 GB NUC each get a stack that
// fits, and lets every value be overridden by its variable.
package sizing

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/mastodon-on-balena/mastodon-balena/bytesize"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

const gib = 1 << 30

// Setting is one derived value and the variable that overrides it.
type Setting struct {
	Var   string // environment variable, e.g. WEB_CONCURRENCY
	Value string
	// Overridden is true when the variable was set by the person.
	Overridden bool
}

// Plan is the sizing chosen for this device.
type Plan struct {
	Tier     string // "small (about 2 GB)", ...
	MemTotal uint64 // bytes
	Mastodon []Setting
	Postgres []Setting // variable POSTGRES_<NAME> overrides PostgreSQL's <name>
}

type tier struct {
	name               string
	below              uint64 // applies when MemTotal < below
	webConcurrency     int
	maxThreads         int
	sidekiqConcurrency int
	sharedBuffers      string
	effectiveCacheSize string
	workMem            string
	maintenanceWorkMem string
	maxConnections     int
}

// Tiers by total memory. A "2 GB" Pi reports about 1.8 GiB, a "4 GB" one
// about 3.7 GiB. Puma's single mode (WEB_CONCURRENCY=0) saves a whole worker
// process, about 300 MB, on the smallest devices.
var tiers = []tier{
	{"small (about 2 GB)", 3 * gib, 0, 5, 5, "128MB", "512MB", "4MB", "64MB", 50},
	{"medium (about 4 GB)", 6 * gib, 1, 5, 10, "256MB", "1GB", "4MB", "128MB", 100},
	{"large (8 GB or more)", ^uint64(0), 2, 5, 15, "1GB", "4GB", "8MB", "256MB", 100},
}

// The overrides, with what a good value looks like.
var (
	mastodonVars = []string{"WEB_CONCURRENCY", "MAX_THREADS", "SIDEKIQ_CONCURRENCY", "DB_POOL"}
	postgresVars = []string{"POSTGRES_SHARED_BUFFERS", "POSTGRES_EFFECTIVE_CACHE_SIZE", "POSTGRES_WORK_MEM", "POSTGRES_MAINTENANCE_WORK_MEM", "POSTGRES_MAX_CONNECTIONS"}
)

// For picks the plan for memTotal bytes, applying overrides from getenv.
// Overrides are assumed valid (see Check).
func For(memTotal uint64, getenv func(string) string) Plan {
	t := tiers[len(tiers)-1]
	for _, c := range tiers {
		if memTotal < c.below {
			t = c
			break
		}
	}
	p := Plan{Tier: t.name, MemTotal: memTotal}
	set := func(list *[]Setting, name, def string) {
		s := Setting{Var: name, Value: def}
		if v := getenv(name); v != "" {
			s.Value, s.Overridden = v, true
			// PostgreSQL reads only its own units: 256MiB is passed as 256MB.
			if n, err := bytesize.Parse(v); err == nil && strings.HasPrefix(name, "POSTGRES_") && name != "POSTGRES_MAX_CONNECTIONS" {
				s.Value = bytesize.Postgres(n)
			}
		}
		*list = append(*list, s)
	}
	set(&p.Mastodon, "WEB_CONCURRENCY", strconv.Itoa(t.webConcurrency))
	set(&p.Mastodon, "MAX_THREADS", strconv.Itoa(t.maxThreads))
	set(&p.Mastodon, "SIDEKIQ_CONCURRENCY", strconv.Itoa(t.sidekiqConcurrency))
	// Each process needs a connection per thread; one pool size fits both
	// puma (MAX_THREADS) and sidekiq (SIDEKIQ_CONCURRENCY).
	threads, _ := strconv.Atoi(p.Mastodon[1].Value)
	sk, _ := strconv.Atoi(p.Mastodon[2].Value)
	set(&p.Mastodon, "DB_POOL", strconv.Itoa(max(threads, sk)))
	set(&p.Postgres, "POSTGRES_SHARED_BUFFERS", t.sharedBuffers)
	set(&p.Postgres, "POSTGRES_EFFECTIVE_CACHE_SIZE", t.effectiveCacheSize)
	set(&p.Postgres, "POSTGRES_WORK_MEM", t.workMem)
	set(&p.Postgres, "POSTGRES_MAINTENANCE_WORK_MEM", t.maintenanceWorkMem)
	set(&p.Postgres, "POSTGRES_MAX_CONNECTIONS", strconv.Itoa(t.maxConnections))
	return p
}

// PostgresArgs renders the PostgreSQL settings as server arguments. They
// are sizes and counts, never secrets.
func (p Plan) PostgresArgs() []string {
	var args []string
	for _, s := range p.Postgres {
		args = append(args, "-c", strings.ToLower(strings.TrimPrefix(s.Var, "POSTGRES_"))+"="+s.Value)
	}
	return args
}

// String renders the plan for the log, marking overridden values.
func (p Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%.1f GiB of memory, tier %s:", float64(p.MemTotal)/gib, p.Tier)
	for _, s := range append(append([]Setting{}, p.Mastodon...), p.Postgres...) {
		fmt.Fprintf(&b, " %s=%s", s.Var, s.Value)
		if s.Overridden {
			b.WriteString(" (set by you)")
		}
	}
	return b.String()
}

// Check validates every override and returns all problems at once.
func Check(getenv func(string) string) []problem.Problem {
	var ps []problem.Problem
	ints := map[string][3]int{ // min, max, example
		"WEB_CONCURRENCY":          {0, 32, 1},
		"MAX_THREADS":              {1, 64, 5},
		"SIDEKIQ_CONCURRENCY":      {1, 100, 10},
		"DB_POOL":                  {1, 200, 10},
		"POSTGRES_MAX_CONNECTIONS": {20, 1000, 100},
	}
	for _, name := range append(append([]string{}, mastodonVars...), postgresVars...) {
		v := getenv(name)
		if v == "" {
			continue
		}
		if r, ok := ints[name]; ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < r[0] || n > r[1] {
				ps = append(ps, problem.Problem{Var: name, What: fmt.Sprintf("is %q; it must be a whole number from %d to %d", v, r[0], r[1]), Example: strconv.Itoa(r[2])})
			}
			continue
		}
		if n, err := bytesize.Parse(v); err != nil {
			ps = append(ps, problem.Problem{Var: name, What: err.Error(), Example: "256MB"})
		} else if n < 64<<10 {
			ps = append(ps, problem.Problem{Var: name, What: fmt.Sprintf("is %q, below 64kB, the least PostgreSQL takes for any of its memory settings; give a unit", v), Example: "256MB"})
		}
	}
	return ps
}

// MemTotal reads the total memory from /proc/meminfo (a container sees the
// device's memory there).
func MemTotal(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read memory size: %w", err)
	}
	defer f.Close()
	return parseMemTotal(f)
}

func parseMemTotal(r io.Reader) (uint64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read memory size: bad MemTotal line %q", sc.Text())
			}
			return kb * 1024, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read memory size: %w", err)
	}
	return 0, fmt.Errorf("read memory size: no MemTotal line")
}
