package keeper

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/snapshot"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
)

// Latest, wherever a backup ID is asked for, names the newest complete
// backup (verified or not).
const Latest = "latest"

// verifyShares: the scheduled verification reads one share in this many of
// the stored media blobs each time, so all of them within eight runs.
const VerifyShares = 8

// target is a backup target opened with the key of its backups.
type target struct {
	store storage.Store
	key   *snapshot.Key
	// own: the device's own target, with the instance's own key; a
	// backup may write to it.
	own    bool
	rec    *instance.Record
	device string
}

// ownTarget opens BACKUP_TARGET for a job that writes to it (a backup, a
// check, a claim): the instance's record, key and device ID, created when
// missing. Nothing is written to the target here.
func (k *Keeper) ownTarget(ctx context.Context, log *slog.Logger) (*target, error) {
	if err := k.S.BackupErr(); err != nil {
		return nil, err
	}
	rec, err := k.S.Dir.EnsureInstanceID(ctx)
	if errors.Is(err, instance.ErrNotProvisioned) {
		return nil, problem.Refusef("%w: the keeper provisions the instance at its first start", err)
	}
	if err != nil {
		return nil, err
	}
	if err := instance.Guard(rec, k.S.Getenv); err != nil {
		return nil, err
	}
	store, err := storage.Open(ctx, k.S.Target, k.S.Getenv)
	if err != nil {
		return nil, err
	}
	keyText, err := k.S.Dir.BackupKey(func() (string, error) {
		key, err := snapshot.NewKey()
		if err != nil {
			return "", err
		}
		return key.String(), nil
	})
	if err != nil {
		return nil, err
	}
	key, err := snapshot.ParseKey(keyText)
	if err != nil {
		return nil, err
	}
	device, err := k.S.Dir.DeviceID(k.S.Getenv)
	if err != nil {
		return nil, err
	}
	return &target{store: storage.WithRetry(store, 5, log), key: key, own: true, rec: rec, device: device}, nil
}

// readTarget opens a target to read from, writing nothing on the device:
// from (a URL, as --from gives it) or BACKUP_TARGET. The device's own key
// reads its own target; any other target, or any target on a device that
// holds no key yet, is read with the key sealed there, opened with
// BACKUP_PASSPHRASE (or BACKUP_AGE_IDENTITY).
func (k *Keeper) readTarget(ctx context.Context, from string, log *slog.Logger) (*target, error) {
	url, name := k.S.Target, TargetVar
	if from != "" {
		url, name = from, "--from"
	}
	if ps := checkTarget(url, name, k.S.Getenv); len(ps) > 0 {
		return nil, ps
	}
	store, err := storage.Open(ctx, url, k.S.Getenv)
	if err != nil {
		return nil, err
	}
	t := &target{store: storage.WithRetry(store, 5, log)}
	if url == k.S.Target {
		if text, err := k.S.Dir.ReadBackupKey(); err == nil {
			if t.key, err = snapshot.ParseKey(text); err != nil {
				return nil, err
			}
			t.own = true
			return t, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	if t.key, err = snapshot.OpenKey(ctx, t.store, k.S.Sealer); err != nil {
		return nil, problem.Refuse(err)
	}
	return t, nil
}

func (t *target) reader() *snapshot.Reader { return &snapshot.Reader{Store: t.store, Key: t.key} }

func (k *Keeper) job(t *target, log *slog.Logger) *snapshot.Backup {
	return &snapshot.Backup{
		Cfg: k.S.Config, Rec: t.rec, Dir: k.S.Dir, Store: t.store, Key: t.key, Sealer: k.S.Sealer, Device: t.device,
		MediaDir: k.S.MediaDir, MastodonVersion: k.S.Config.MastodonVersion, Compression: k.S.Compression, MediaConcurrency: k.S.MediaConcurrency, Log: log,
	}
}

// errBackupsOff is the refusal of a backup that nothing could open on new
// hardware.
var errBackupsOff = problem.Refuse(errors.New(`backups are OFF: set BACKUP_PASSPHRASE (or BACKUP_AGE_RECIPIENT) so that they can be opened on new hardware (example: BACKUP_PASSPHRASE="four random words you keep elsewhere")`))

// Backup takes a backup now, holding the job lock: the backup, a read-back
// of everything it wrote, recorded on the target as verified, then the
// retention policy. A refused backup writes nothing to the target.
func (k *Keeper) Backup(ctx context.Context) (*snapshot.Manifest, error) {
	return byHand(ctx, k, jobBackup, "backup", func(ctx context.Context, log *slog.Logger) (*snapshot.Manifest, error) {
		return k.backupLocked(ctx, log, true, false)
	})
}

// byHand runs a scheduled job from a terminal: refused while backups are
// off, under the job lock, and recorded as a scheduled run is.
func byHand[T any](ctx context.Context, k *Keeper, job, component string, run func(context.Context, *slog.Logger) (T, error)) (T, error) {
	var none T
	log := k.logger(component)
	if !k.S.BackupsOn() {
		return none, errBackupsOff
	}
	unlock, err := k.lock(ctx, log)
	if err != nil {
		return none, err
	}
	defer unlock()
	k.JobStarted(job, time.Now())
	v, err := run(ctx, log)
	if ctx.Err() == nil {
		k.JobFinished(job, time.Now(), err)
	}
	return v, err
}

// backupLocked is a backup, its read-back and, with prune, the retention
// policy; the caller holds the job lock. duringRestore: the safety backup
// of a restore, whose staging areas it leaves alone.
func (k *Keeper) backupLocked(ctx context.Context, log *slog.Logger, prune, duringRestore bool) (*snapshot.Manifest, error) {
	t, err := k.ownTarget(ctx, log)
	if err != nil {
		return nil, err
	}
	job := k.job(t, log)
	job.DuringRestore = duringRestore
	res, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	m := res.Manifest
	if _, err := t.reader().Verify(ctx, m.ID, snapshot.MediaSelection{Blobs: res.Uploaded}); err != nil {
		return m, fmt.Errorf("the new backup %s does not read back whole: %w", m.ID, err)
	}
	if err := snapshot.MarkVerified(ctx, t.store, t.key, m, false, time.Now()); err != nil {
		return m, err
	}
	if !prune {
		k.recordBackups(ctx, t)
		return m, nil
	}
	if err := snapshot.Prune(ctx, t.store, t.key, k.S.Retention, t.rec.InstanceID, log, time.Now()); err != nil {
		return m, err
	}
	k.forgetOldMarkers()
	k.recordBackups(ctx, t)
	return m, nil
}

// forgetOldMarkers removes the verified-<id> markers that releases before
// authenticated backups kept on the device: verification is recorded on
// the target now, where a new device finds it.
func (k *Keeper) forgetOldMarkers() {
	names, _ := k.S.Dir.Markers()
	for _, n := range names {
		if strings.HasPrefix(n, "verified-") {
			k.S.Dir.Unmark(n)
		}
	}
}

// scheduledBackup is the backup job of the schedule, which holds the job
// lock.
func (k *Keeper) scheduledBackup(ctx context.Context) error {
	log := k.logger("backup")
	if !k.S.BackupsOn() {
		log.Warn("no backup taken: backups are OFF until BACKUP_PASSPHRASE (or BACKUP_AGE_RECIPIENT) is set")
		return nil
	}
	_, err := k.backupLocked(ctx, log, true, false)
	return err
}

// backupBeforeMigrate takes a backup before an upgrade's migrations, when
// backups are on. Provisioning holds the job lock.
func (k *Keeper) backupBeforeMigrate(ctx context.Context) error {
	log := k.logger("backup")
	if !k.S.BackupsOn() {
		log.Warn("no backup before migrating: backups are OFF until BACKUP_PASSPHRASE is set")
		return nil
	}
	log.Info("taking a backup before migrating")
	_, err := k.backupLocked(ctx, log, true, false)
	return err
}

// Check is the scheduled verification, by hand: it holds the job lock.
func (k *Keeper) Check(ctx context.Context) (*snapshot.Check, error) {
	return byHand(ctx, k, jobVerify, "verify", k.check)
}

func (k *Keeper) scheduledVerify(ctx context.Context) error {
	if !k.S.BackupsOn() {
		return nil // no backups are taken: nothing to verify
	}
	_, err := k.check(ctx, k.logger("verify"))
	return err
}

// check verifies what the target holds: the newest backup read back whole,
// a rotating share of the media, damaged blobs replaced from the device,
// and the sealed key opened with the passphrase - what a new device would
// need. The caller holds the job lock.
func (k *Keeper) check(ctx context.Context, log *slog.Logger) (*snapshot.Check, error) {
	t, err := k.ownTarget(ctx, log)
	if err != nil {
		return nil, err
	}
	c, err := k.job(t, log).VerifyStored(ctx, VerifyShares)
	if err != nil {
		return c, fmt.Errorf("verification of the backups at %s: %w", t.store, err)
	}
	if c.Newest == "" {
		log.Info("no backup to verify yet", "target", t.store.String())
		return c, nil
	}
	if k.S.Sealer.Passphrase != "" {
		sealed, err := snapshot.OpenKey(ctx, t.store, k.S.Sealer)
		if err == nil && sealed.String() != t.key.String() {
			err = errors.New("it opens to another key than this instance's")
		}
		if err != nil {
			return c, fmt.Errorf("the sealed backup key at %s does not open with BACKUP_PASSPHRASE: a new device could not restore these backups. The next backup seals it again (%w)", t.store, err)
		}
	}
	log.Info("backups verified", "newest", c.Newest, "media_blobs_read", c.Blobs, "repaired", len(c.Repaired))
	k.recordBackups(ctx, t)
	return c, nil
}

// Listed is one backup as `backup list` shows it.
type Listed struct {
	ID       string
	Manifest *snapshot.Manifest // nil when Unusable
	Verified bool
	Old      bool  // format 1: unauthenticated
	Unusable error // damaged, forged or another key's
}

// List lists the backups at from (BACKUP_TARGET when empty), oldest
// first. It writes nothing, so it works on a fresh device too, with the
// passphrase.
func (k *Keeper) List(ctx context.Context, from string) (where string, list []Listed, err error) {
	t, err := k.readTarget(ctx, from, k.logger("backup"))
	if errors.Is(err, snapshot.ErrNoBackup) {
		if from == "" {
			from = k.S.Target
		}
		return storage.RedactURL(from), nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	rd := t.reader()
	l, err := rd.List(ctx)
	if err != nil {
		return t.store.String(), nil, err
	}
	for _, m := range l.Snapshots {
		list = append(list, Listed{ID: m.ID, Manifest: m, Verified: rd.Verified(ctx, l, m.ID)})
	}
	for _, m := range l.Old {
		list = append(list, Listed{ID: m.ID, Manifest: m, Old: true})
	}
	for _, u := range l.Unreadable {
		list = append(list, Listed{ID: u.ID, Unusable: u.Err})
	}
	return t.store.String(), list, nil
}

// resolve turns an ID as a person gives it - an ID or Latest - into a
// snapshot ID.
func resolve(ctx context.Context, rd *snapshot.Reader, id string) (string, error) {
	if id != Latest {
		return id, snapshot.CheckID(id)
	}
	l, err := rd.List(ctx)
	if err != nil {
		return "", err
	}
	if len(l.Snapshots) == 0 {
		return "", problem.Refusef("%w at %s (see 'mastokeeper backup list')", snapshot.ErrNoBackup, rd.Store)
	}
	return l.Snapshots[len(l.Snapshots)-1].ID, nil
}

// Verify reads a whole backup back, media included, and opens the target's
// sealed key with the passphrase: "verified" means a new device holding
// only the passphrase could restore it. It records that on the target.
func (k *Keeper) Verify(ctx context.Context, from, id string) (*snapshot.Manifest, error) {
	log := k.logger("verify")
	if id != Latest {
		if err := snapshot.CheckID(id); err != nil {
			return nil, problem.Refuse(err)
		}
	}
	t, err := k.readTarget(ctx, from, log)
	if err != nil {
		return nil, err
	}
	// Beside a backup of this instance, a prune could remove what is read.
	if t.own {
		unlock, err := k.lock(ctx, log)
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	if id, err = resolve(ctx, t.reader(), id); err != nil {
		return nil, err
	}
	m, err := t.reader().Verify(ctx, id, snapshot.MediaSelection{All: true})
	if err != nil {
		return nil, err
	}
	if k.S.Sealer.Passphrase != "" || k.S.Sealer.Identity != "" {
		sealed, err := snapshot.OpenKey(ctx, t.store, k.S.Sealer)
		if err != nil {
			return nil, fmt.Errorf("the backup reads back, but the sealed key on the target does not open: a new device could not restore it: %w", err)
		}
		if sealed.String() != t.key.String() {
			return nil, errors.New("the backup reads back, but the sealed key on the target opens to another key than this instance's: a new device could not restore it. The next backup seals the right one")
		}
	}
	if err := snapshot.MarkVerified(ctx, t.store, t.key, m, true, time.Now()); err != nil {
		return nil, err
	}
	return m, nil
}

// Claim makes this device the one that writes the instance's backups at
// BACKUP_TARGET, after another device of the same instance did (a move, or
// a restore onto a trial device). confirm is asked with the owner found;
// it returns false to stop. The other device's next backup is refused.
// Only a target whose owner record authenticates with this instance's key
// can be claimed: another instance's backups are never taken over.
func (k *Keeper) Claim(ctx context.Context, confirm func(o *snapshot.Owner) bool) (claimed bool, err error) {
	log := k.logger("backup")
	if !k.S.BackupsOn() {
		return false, errBackupsOff
	}
	unlock, err := k.lock(ctx, log)
	if err != nil {
		return false, err
	}
	defer unlock()
	t, err := k.ownTarget(ctx, log)
	if err != nil {
		return false, err
	}
	me := snapshot.Owner{LocalDomain: t.rec.LocalDomain, InstanceID: t.rec.InstanceID, Device: t.device, Since: time.Now().UTC()}
	claimed, err = snapshot.TakeOver(ctx, t.store, t.key, me, confirm)
	if claimed && err == nil {
		log.Info("this device writes the backups from now on", "target", t.store.String())
	}
	return claimed, err
}
