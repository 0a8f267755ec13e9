package keeper

import (
	"strings"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func provisioned(t *testing.T) string {
	dir := t.TempDir()
	rec := instance.NewRecord("social.example.org", func(string) string { return "" }, mustSecrets(t))
	if err := (instance.Dir{Path: dir}).Create(rec); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustSecrets(t *testing.T) instance.Secrets {
	s, err := instance.GenerateSecrets(instance.RandomReader)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFirstBootOnlyVariablesStopOnlyAFirstBoot(t *testing.T) {
	vars := map[string]string{"ADMIN_USERNAME": "admin", "ADMIN_EMAIL": "nope", "LOCAL_DOMAIN": "social.example.org"}
	vars["MASTOKEEPER_STATE_DIR"] = t.TempDir()
	fresh := Load(env(vars), nil)
	if err := fresh.Err(); err == nil || !strings.Contains(err.Error(), "ADMIN_USERNAME: ") || !strings.Contains(err.Error(), "ADMIN_EMAIL: ") {
		t.Errorf("a fresh device must refuse a reserved ADMIN_USERNAME and a bad ADMIN_EMAIL: %v", fresh.Err())
	}
	vars["MASTOKEEPER_STATE_DIR"] = provisioned(t)
	running := Load(env(vars), nil)
	if err := running.Err(); err != nil {
		t.Errorf("a provisioned instance must go on: %v", err)
	}
	if len(running.Warnings) != 2 || !strings.Contains(running.Warnings[0], "only matters when an instance is created") {
		t.Errorf("warnings: %q", running.Warnings)
	}
}

func TestRestoreFromOnAProvisionedDeviceIsAWarningThatNamesTheCommand(t *testing.T) {
	vars := map[string]string{"MASTOKEEPER_STATE_DIR": provisioned(t), "RESTORE_FROM": "s3://bucket/old", "BACKUP_S3_ACCESS_KEY_ID": "AK", "BACKUP_S3_SECRET_ACCESS_KEY": "SK", "LOCAL_DOMAIN": "social.example.org"}
	s := Load(env(vars), nil)
	if s.Err() != nil || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "'mastokeeper restore --force'") {
		t.Errorf("err %v, warnings %q", s.Err(), s.Warnings)
	}
	vars["RESTORE_FROM"] = "ftp://x"
	if s := Load(env(vars), nil); s.Err() != nil {
		t.Errorf("a bad RESTORE_FROM that is not used stops nothing: %v", s.Err())
	}
	vars["MASTOKEEPER_STATE_DIR"] = t.TempDir()
	if err := Load(env(vars), nil).Err(); err == nil || !strings.HasPrefix(err.Error(), "RESTORE_FROM: ") {
		t.Errorf("on a fresh device a bad RESTORE_FROM is refused, named: %v", err)
	}
}

func TestBackupProblemsStopBackupsOnlyAndAllAreListedOnce(t *testing.T) {
	vars := map[string]string{"MASTOKEEPER_STATE_DIR": t.TempDir(), "LOCAL_DOMAIN": "social.example.org",
		"BACKUP_KEEP_DAILY": "-1", "BACKUP_COMPRESSION": "fastest", "BACKUP_PASSPHRASE": "short", "BACKUP_SCHEDULE": "whenever",
		"BACKUP_MEDIA_CONCURRENCY": "0", "RESTORE_JOBS": "many"}
	s := Load(env(vars), nil)
	if s.Err() != nil {
		t.Errorf("backup variables stop the keeper: %v", s.Err())
	}
	err := s.BackupErr()
	for _, v := range []string{"BACKUP_KEEP_DAILY: ", "BACKUP_COMPRESSION: ", "BACKUP_PASSPHRASE: ", "BACKUP_MEDIA_CONCURRENCY: is \"0\"; it must be a whole number from 1 to 32 (example: BACKUP_MEDIA_CONCURRENCY=8)",
		"RESTORE_JOBS: is \"many\"; it must be a whole number from 1 to 32 (example: RESTORE_JOBS="} {
		if err == nil || !strings.Contains(err.Error(), v) {
			t.Errorf("BackupErr lacks %s: %v", v, err)
		}
	}
	all := s.Problems()
	if len(all) != 6 || all[5].Var != "BACKUP_SCHEDULE" {
		t.Errorf("Problems: %v", all)
	}
	if strings.Contains(all.Error(), "short") {
		t.Error("a passphrase was repeated")
	}
}
