package restore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"runtime"
	"strconv"
	"strings"

	"github.com/mastodon-on-balena/mastodon-balena/bytesize"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/jobs"
	"github.com/mastodon-on-balena/mastodon-balena/pgarchive"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
)

// The database is restored by pg_restore with one job per core (at most
// maxJobs) from the dump staged whole as a file, its data offsets written
// into its table of contents as it is staged (package pgarchive): each job
// then seeks to its table. Without the offsets every job scans the archive
// and several are no faster than one. On 2 cores, at scale 1 of
// scripts/bench-backup, this took the whole restore from 1.06x the time of
// a bare single-job pg_restore to 0.90x (its pg_restore phase to 0.67x).
//
// A dump in snapshot.LayoutArchive is staged as pg_dump wrote it,
// compressed. One in LayoutFrames is staged uncompressed, which needs that
// size on disk beside the database it becomes: a device short of room
// gets it staged compressed, as before, and restored by one job reading
// it as a stream.
const maxJobs = 8

// oldRatio estimates the uncompressed size of a dump from a backup that
// does not record it: zstd makes a Mastodon dump 3 to 4 times smaller.
const oldRatio = 6

// DefaultJobs is how many pg_restore jobs this device runs by default.
func DefaultJobs() int { return min(max(runtime.NumCPU(), 1), maxJobs) }

func (r *Restore) jobs() int {
	if r.Jobs > 0 {
		return r.Jobs
	}
	return DefaultJobs()
}

// stageDump downloads the dump into the state staging area as pg_dump's
// archive, indexed and patched for several jobs - frames decompressed when
// there is room for that, else staged compressed. Either way every byte is
// decrypted, authenticated and read by pg_restore --list before anything
// on the device changes.
func (r *Restore) stageDump(ctx context.Context, log *slog.Logger, rd *snapshot.Reader, st *staged, state *os.Root) error {
	m := st.m
	dbObj, _ := m.Object(snapshot.DBDump)
	progress := r.progress(log, "database", dbObj.Size)
	switch {
	case m.DumpLayout == snapshot.LayoutArchive:
		// Staged as stored: no more room than the download needs.
	case r.jobs() == 1:
		return r.stageCompressed(ctx, rd, st, state, progress)
	default:
		raw := m.DumpBytes
		if raw <= 0 {
			raw = dbObj.Size * oldRatio
		}
		// Room for the uncompressed dump and for the database restored
		// from it.
		need := 2*raw + 256<<20
		if space, err := jobs.StatFS(r.Dir.Path); err == nil && int64(space.Free) < need {
			log.Warn("not enough free disk to restore the database with several jobs: restoring it with one, which takes longer",
				"free", bytesize.Format(int64(space.Free)), "needed", bytesize.Format(need))
			return r.stageCompressed(ctx, rd, st, state, progress)
		}
	}
	st.dump = path.Join(stateStaging, "db.dump")
	f, err := state.OpenFile(st.dump, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return staging(err, r.Dir.Path)
	}
	defer f.Close()
	pr, pw := io.Pipe()
	indexed := make(chan error, 1)
	go func() {
		indexed <- func() error {
			dump, err := snapshot.OpenDump(pr, 2)
			if err != nil {
				return err
			}
			defer dump.Close()
			bw := bufio.NewWriterSize(f, 1<<20)
			tee := io.TeeReader(dump, bw)
			ix, ixErr := pgarchive.Read(tee)
			// What the index could not follow is copied all the same: it
			// only speeds pg_restore up.
			if _, err := io.Copy(io.Discard, tee); err != nil {
				return err
			}
			if err := bw.Flush(); err != nil {
				return err
			}
			if ixErr != nil {
				log.Warn("the dump's data offsets cannot be read here; restoring it with one job", "error", ixErr.Error())
				return nil
			}
			st.index = ix
			return ix.Patch(f)
		}()
		pr.CloseWithError(errDumpUnreadable)
	}()
	err = r.fetchTo(ctx, rd, m, snapshot.DBDump, pw, progress)
	pw.CloseWithError(err)
	ixErr := <-indexed
	switch {
	case err != nil && !errors.Is(err, errDumpUnreadable):
		return staging(err, r.Dir.Path)
	case errors.As(ixErr, new(*fs.PathError)):
		return staging(ixErr, r.Dir.Path) // writing the staged file
	case ixErr != nil:
		return fmt.Errorf("%w: backup %s: the database dump: %v", ErrCorrupt, m.ID, ixErr)
	}
	return r.checkDump(m, snapshot.ListDumpFile(ctx, f))
}

// stageCompressed stages the dump as stored, decrypted but compressed,
// while pg_restore --list reads it as it arrives.
func (r *Restore) stageCompressed(ctx context.Context, rd *snapshot.Reader, st *staged, state *os.Root, progress io.Writer) error {
	st.dump, st.compressed = path.Join(stateStaging, "db.dump.zst"), true
	pr, pw := io.Pipe()
	listed := make(chan error, 1)
	go func() {
		// Two decoders: a quarter faster, for a few MiB more than a
		// backup's verification may spend.
		err := snapshot.ListDump(ctx, pr, 2)
		pr.CloseWithError(errDumpUnreadable) // the download must not wait on a reader that is gone
		listed <- err
	}()
	err := r.fetch(ctx, rd, st.m, snapshot.DBDump, state, st.dump, io.MultiWriter(progress, pw))
	pw.CloseWithError(err)
	listErr := <-listed
	if err != nil && !errors.Is(err, errDumpUnreadable) {
		return staging(err, r.Dir.Path)
	}
	return r.checkDump(st.m, listErr)
}

// checkDump turns pg_restore --list's verdict into the restore's.
func (r *Restore) checkDump(m *snapshot.Manifest, listErr error) error {
	if errors.Is(listErr, snapshot.ErrPgRestoreTooOld) {
		return &problem.Refused{Err: fmt.Errorf("backup %s (PostgreSQL %s) was dumped by a newer pg_dump than this device's PostgreSQL tools read: restore it onto a device running this project's current images. Nothing was changed (%v)", m.ID, m.PostgresVersion, listErr)}
	}
	if listErr != nil {
		return fmt.Errorf("backup %s: the database dump: %w", m.ID, listErr)
	}
	return nil
}

// pgRestore restores the staged dump, creating every object as Mastodon's
// role: with several jobs from the indexed dump, with one from a dump that
// could not be indexed, or with one reading the compressed dump as a
// stream.
func (r *Restore) pgRestore(ctx context.Context, log *slog.Logger, rec *instance.Record, st *staged) error {
	srv := r.server(rec)
	args := []string{"--no-owner", "--no-privileges", "--exit-on-error", "--no-password",
		"--role", r.Cfg.DBUser, "--host", srv.Host, "--port", strconv.Itoa(srv.Port), "--username", srv.User, "--dbname", r.Cfg.DBName}
	cmd := exec.CommandContext(ctx, "pg_restore")
	cmd.Env = append(os.Environ(), "PGPASSWORD="+srv.Password)
	cmd.Stdout = io.Discard
	out := &restoreOutput{}
	cmd.Stderr = out

	state, err := os.OpenRoot(r.Dir.Path)
	if err != nil {
		return err
	}
	f, err := state.Open(st.dump) // through the root: a symlink swapped in leads nowhere
	state.Close()
	if err != nil {
		return err
	}
	defer f.Close()
	jobs := 1
	if st.index != nil {
		jobs = r.jobs()
	}
	log.Info("restoring the database with pg_restore: the longest step, minutes for a large instance on a Raspberry Pi", "jobs", jobs)
	switch {
	case st.compressed:
		dump, err := snapshot.OpenDump(f, 2)
		if err != nil {
			return err
		}
		defer dump.Close()
		cmd.Args = append(cmd.Args, args...)
		cmd.Stdin = dump
	default:
		if st.index != nil {
			bar := r.progress(log, "database", 0)
			bar.verb, bar.bytes = "restoring", false
			out.progress = newRestoreProgress(st.index, bar)
			args = append(args, "--verbose")
		}
		// The file by its descriptor: pg_restore's jobs open it by name,
		// and /dev/fd/N names this open file, not whatever the path holds.
		cmd.ExtraFiles = []*os.File{f}
		cmd.Args = append(cmd.Args, append(args, "--jobs", strconv.Itoa(jobs), "/dev/fd/3")...)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pg_restore: %w: %s", err, out.errors())
	}
	if out.progress != nil {
		out.progress.finish()
	}
	return nil
}

// restoreOutput reads pg_restore's standard error: its --verbose lines
// move the progress bar, and the last lines that are not progress are kept
// for the error message.
type restoreOutput struct {
	progress *restoreProgress
	partial  []byte
	kept     []string
}

func (o *restoreOutput) Write(p []byte) (int, error) {
	o.partial = append(o.partial, p...)
	for {
		i := bytes.IndexByte(o.partial, '\n')
		if i < 0 {
			break
		}
		o.line(string(o.partial[:i]))
		o.partial = o.partial[i+1:]
	}
	return len(p), nil
}

func (o *restoreOutput) line(l string) {
	if msg, ok := strings.CutPrefix(l, "pg_restore: "); ok && o.progress != nil {
		if o.progress.line(msg) {
			return
		}
		// --verbose's account of what it does has no level; errors,
		// warnings and their details do.
		if !hasAnyPrefix(msg, "error", "warning", "detail", "hint", "from TOC entry") {
			return
		}
	}
	o.kept = append(o.kept, l)
	if len(o.kept) > 20 {
		o.kept = o.kept[1:]
	}
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func (o *restoreOutput) errors() string {
	if len(o.partial) > 0 {
		o.line(string(o.partial))
		o.partial = nil
	}
	return strings.TrimSpace(strings.Join(o.kept, "\n"))
}

// restoreProgress turns pg_restore's "finished item" lines into a share
// of the work: a table's data weighs its bytes, an index or constraint the
// bytes of the tables it is built on, which is what its build reads.
type restoreProgress struct {
	weight map[int]int64 // items not finished yet
	bar    *progressLog
}

func newRestoreProgress(ix *pgarchive.Index, bar *progressLog) *restoreProgress {
	p := &restoreProgress{weight: map[int]int64{}, bar: bar}
	tableData := map[int]int64{} // a table's dump ID -> its data's bytes
	for _, e := range ix.Entries {
		if e.DataSize > 0 {
			p.weight[e.DumpID] = e.DataSize
			for _, d := range e.Deps {
				tableData[d] += e.DataSize
			}
		}
	}
	for _, e := range ix.Entries {
		if e.Section == pgarchive.SectionPostData {
			var n int64 = 1
			seen := map[int]bool{}
			for _, d := range e.Deps {
				if !seen[d] { // pg_dump may name a table twice
					seen[d] = true
					n += tableData[d]
				}
			}
			p.weight[e.DumpID] = n
		}
	}
	bar.total = 0
	for _, n := range p.weight {
		bar.total += n
	}
	return p
}

// line counts an item pg_restore finished; false for any other line.
func (p *restoreProgress) line(msg string) bool {
	var rest string
	var ok bool
	if rest, ok = strings.CutPrefix(msg, "finished item "); !ok {
		if rest, ok = strings.CutPrefix(msg, "processing missed item "); !ok {
			return strings.HasPrefix(msg, "launching item ") || strings.HasPrefix(msg, "processing item ")
		}
	}
	id, _, _ := strings.Cut(rest, " ")
	if n, err := strconv.Atoi(id); err == nil && p.weight[n] > 0 {
		p.bar.add(p.weight[n])
		delete(p.weight, n)
	}
	return true
}

// finish fills the bar: items pg_restore did not report (a serial pass)
// are done too once it exits well.
func (p *restoreProgress) finish() {
	var left int64
	for _, n := range p.weight {
		left += n
	}
	p.weight = nil
	if left > 0 {
		p.bar.add(left)
	}
}
