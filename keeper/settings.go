// Package keeper is what mastokeeper does, behind its command line: the
// configuration read once, the job policy (provisioning, backup, its
// verification and retention, restore - at first boot too - and the
// restarts they need), and what it records about them. cmd/mastokeeper
// only parses arguments, prints and maps errors to exit codes.
package keeper

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/mastodon-on-balena/mastodon-balena/config"
	"github.com/mastodon-on-balena/mastodon-balena/frontdoor"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/jobs"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/restore"
	"github.com/mastodon-on-balena/mastodon-balena/sizing"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
	_ "github.com/mastodon-on-balena/mastodon-balena/storage/all" // every backend
)

// Variables read here rather than by a package of their own.
const (
	TargetVar      = "BACKUP_TARGET"
	RestoreFromVar = "RESTORE_FROM"
	MediaDirVar    = "MEDIA_DIR"
	// MediaConcurrencyVar: how many media files are uploaded or
	// downloaded at once.
	MediaConcurrencyVar = "BACKUP_MEDIA_CONCURRENCY"
	// RestoreJobsVar: how many pg_restore jobs a restore runs.
	RestoreJobsVar = "RESTORE_JOBS"

	// DefaultTarget is a directory in the keeper's own volume: on the same
	// disk as the instance, so it guards against mistakes, not against a
	// dead SD card.
	DefaultTarget   = "file:///backups"
	DefaultMediaDir = "/opt/mastodon/public/system"
)

// firstBootOnly are variables that matter only when the instance is
// created: once it is, a bad value is a warning, never a reason to stop.
var firstBootOnly = map[string]bool{"ADMIN_USERNAME": true, "ADMIN_EMAIL": true}

// Settings is the keeper's environment, read once. Every problem is
// collected, sorted by what it stops: Err stops everything, BackupErr
// backups; a bad schedule or cleanup variable only its own job (the
// scheduler and cleanup report those), a bad front door only the proxy's
// mode (DoorProblems); Warnings stop nothing.
type Settings struct {
	Getenv  func(string) string
	Environ []string

	Config *config.Config // never nil
	Plan   sizing.Plan
	Dir    instance.Dir

	Target        string // BACKUP_TARGET, or DefaultTarget
	TargetDefault bool   // BACKUP_TARGET is unset
	RestoreFrom   string
	MediaDir      string
	Sealer        snapshot.Sealer
	Retention     snapshot.Retention
	Compression   zstd.EncoderLevel
	// MediaConcurrency: media files uploaded and downloaded at once.
	MediaConcurrency int
	// RestoreJobs: pg_restore jobs of a restore.
	RestoreJobs int
	// Door is how people reach the instance: the proxy's mode, the tunnel
	// and the onion service. Its problems stop only the proxy's mode.
	Door frontdoor.Plan

	core, backup, jobs, door problem.List
	Warnings                 []string
	doorWarnings             []string // also in Warnings
}

// Load reads the settings from getenv and the device (its memory, the
// state directory's record). It never writes.
func Load(getenv func(string) string, environ []string) *Settings {
	s := &Settings{Getenv: getenv, Environ: environ}
	cfg, err := config.Load(getenv)
	s.Config = cfg
	s.Dir = instance.Dir{Path: cfg.StateDir}
	var ps problem.List
	errors.As(err, &ps)
	_, recErr := s.Dir.Read()
	provisioned := recErr == nil
	for _, p := range ps {
		if provisioned && firstBootOnly[p.Var] {
			s.Warnings = append(s.Warnings, p.String()+"; it only matters when an instance is created, so this one goes on")
			continue
		}
		s.core = append(s.core, p)
	}
	if mem, err := sizing.MemTotal("/proc/meminfo"); err != nil {
		s.core = append(s.core, problem.Problem{Var: "/proc/meminfo", What: err.Error()})
	} else {
		s.Plan = sizing.For(mem, getenv)
	}

	s.Target, s.TargetDefault = getenv(TargetVar), getenv(TargetVar) == ""
	if s.TargetDefault {
		s.Target = DefaultTarget
	}
	s.backup = append(s.backup, storage.Check(s.Target, getenv)...)
	s.RestoreFrom = getenv(RestoreFromVar)
	if s.RestoreFrom != "" {
		for _, p := range checkTarget(s.RestoreFrom, RestoreFromVar, getenv) {
			if provisioned { // it would not be used
				s.Warnings = append(s.Warnings, p.String())
			} else {
				s.core = append(s.core, p)
			}
		}
		if provisioned {
			s.Warnings = append(s.Warnings, RestoreFromVar+" is set, but this device already holds an instance, so it is not restored at start (RESTORE_FROM only acts on a fresh device). "+
				"To replace this instance with the newest backup there, run 'mastokeeper restore --force' in a terminal on the keeper service; otherwise remove the variable")
		}
	}
	s.MediaDir = DefaultMediaDir
	if d := getenv(MediaDirVar); d != "" {
		s.MediaDir = d // checked with the cleanup's variables
	}
	s.Sealer = snapshot.Sealer{Passphrase: getenv("BACKUP_PASSPHRASE"), Recipient: getenv("BACKUP_AGE_RECIPIENT"), Identity: getenv("BACKUP_AGE_IDENTITY")}
	var sealErr problem.List
	if errors.As(s.Sealer.CheckSeal(), &sealErr) {
		s.backup = append(s.backup, sealErr...)
	}
	s.Retention = snapshot.Retention{Daily: 7, Weekly: 4}
	s.MediaConcurrency = snapshot.DefaultMediaConcurrency
	s.RestoreJobs = restore.DefaultJobs()
	for _, v := range []struct {
		name     string
		dst      *int
		min, max int
	}{
		{"BACKUP_KEEP_DAILY", &s.Retention.Daily, 0, 1000},
		{"BACKUP_KEEP_WEEKLY", &s.Retention.Weekly, 0, 1000},
		{MediaConcurrencyVar, &s.MediaConcurrency, 1, 32},
		{RestoreJobsVar, &s.RestoreJobs, 1, 32},
	} {
		if raw := getenv(v.name); raw != "" {
			n, err := strconv.Atoi(raw)
			if err != nil || n < v.min || n > v.max {
				// The default, still in dst, is the example.
				s.backup = append(s.backup, problem.Problem{Var: v.name, What: fmt.Sprintf("is %q; it must be a whole number from %d to %d", raw, v.min, v.max), Example: strconv.Itoa(*v.dst)})
				continue
			}
			*v.dst = n
		}
	}
	var compErr problem.List
	if s.Compression, err = snapshot.CompressionFromEnv(getenv); errors.As(err, &compErr) {
		s.backup = append(s.backup, compErr...)
	}
	s.jobs = append(jobs.CheckSchedules(getenv), jobs.CheckCleanup(getenv)...)
	s.Door, s.door, s.doorWarnings = frontdoor.Load(getenv)
	s.Warnings = append(s.Warnings, s.doorWarnings...)
	return s
}

// checkTarget is storage.Check of a target URL that name gives
// (BACKUP_TARGET, RESTORE_FROM, --from): its problems name that.
func checkTarget(url, name string, getenv func(string) string) problem.List {
	ps := storage.Check(url, getenv)
	for i := range ps {
		if ps[i].Var == TargetVar {
			ps[i].Var = name
		}
	}
	return ps
}

// DoorProblems are the front door's problems: the proxy serves plain HTTP
// on port 80 until they are fixed.
func (s *Settings) DoorProblems() problem.List { return s.door }

// LoadEnv is Load of the process's environment.
func LoadEnv() *Settings { return Load(os.Getenv, os.Environ()) }

// Err is the problems that stop the keeper altogether (a problem.List);
// nil when there are none.
func (s *Settings) Err() error { return s.core.Err() }

// BackupErr is the problems that stop backups and restores.
func (s *Settings) BackupErr() error {
	return append(append(problem.List{}, s.core...), s.backup...).Err()
}

// BackupsOn says whether backups are taken: they need a passphrase or an
// age recipient to be opened on new hardware.
func (s *Settings) BackupsOn() bool { return s.Sealer.Passphrase != "" || s.Sealer.Recipient != "" }

// Problems is every problem of every variable, for `config check`: the
// ones above, each job's, an unusable domain and variables contradicting
// the recorded instance.
func (s *Settings) Problems() problem.List {
	all := append(append(append(append(problem.List{}, s.core...), s.backup...), s.jobs...), s.door...)
	if s.Getenv("LOCAL_DOMAIN") == "" {
		if _, _, err := instance.ResolveDomain(s.Getenv); err != nil {
			all = append(all, problem.Problem{Var: "LOCAL_DOMAIN", What: err.Error()})
		}
	}
	if rec, err := s.Dir.Read(); err == nil {
		var g *instance.GuardError
		if errors.As(instance.Guard(rec, s.Getenv), &g) {
			for _, p := range g.Problems {
				name, what, _ := strings.Cut(p, " ")
				all = append(all, problem.Problem{Var: name, What: what})
			}
		}
	}
	return all
}
