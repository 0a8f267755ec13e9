package storage_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/problem"
	"github.com/mastodon-on-balena/mastodon-balena/storage"
	_ "github.com/mastodon-on-balena/mastodon-balena/storage/all"
	"github.com/mastodon-on-balena/mastodon-balena/storage/file"
	"github.com/mastodon-on-balena/mastodon-balena/storage/s3"
	"github.com/mastodon-on-balena/mastodon-balena/storage/swift"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func vars(problems []problem.Problem) []string {
	var out []string
	for _, p := range problems {
		out = append(out, p.Var)
	}
	sort.Strings(out)
	return out
}

func TestOpenSchemes(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "backups")
	s, err := storage.Open(ctx, "file://"+dir, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*file.Store); !ok || s.String() != "file://"+dir {
		t.Errorf("file target: %T %q", s, s)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("Open did not create the directory 0700: %v %v", fi, err)
	}
	s, err = storage.Open(ctx, "file://localhost"+dir+"/", env(nil))
	if err != nil || s.String() != "file://"+dir {
		t.Errorf("file://localhost/...: %v %v", s, err)
	}

	s, err = storage.Open(ctx, "s3://my-bucket/mastodon/prod", env(map[string]string{
		"BACKUP_S3_ENDPOINT": "https://s3.example.com", "BACKUP_S3_ACCESS_KEY_ID": "AKIAEXAMPLEKEY", "BACKUP_S3_SECRET_ACCESS_KEY": "very-secret-key",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*s3.Store); !ok || s.String() != "s3://my-bucket/mastodon/prod at https://s3.example.com" {
		t.Errorf("s3 target: %T %q", s, s)
	}

	s, err = storage.Open(ctx, "swift://my-container/mastodon/", env(map[string]string{
		"BACKUP_SWIFT_AUTH_URL": "https://auth.example.com/v3", "BACKUP_SWIFT_USER": "u", "BACKUP_SWIFT_KEY": "very-secret-key",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*swift.Store); !ok || s.String() != "swift://my-container/mastodon at https://auth.example.com/v3" {
		t.Errorf("swift target: %T %q", s, s)
	}
}

func TestOpenBadTargets(t *testing.T) {
	for raw, wantIn := range map[string]string{
		"":                                "is empty",
		"ftp://host/x":                    `unknown scheme "ftp"`,
		"/var/backups":                    "no scheme",
		"s3:my-bucket/x":                  "needs '//'",
		"file://relative/dir":             `host part "relative"`,
		"file://":                         "no absolute path",
		"s3://":                           "names no bucket",
		"s3://my-bucket//x":               "empty segment",
		"s3://my-bucket/a/../b":           `".." segment`,
		"s3://my-bucket/x?region=eu":      "query string",
		"s3://AKIA:topsecret@my-bucket/x": "contains credentials",
		"s3://My_Bucket/x":                "not a valid bucket name",
		"s3://s3.amazonaws.com/my-bucket": "looks like a service address",
		"s3://minio:9000/my-bucket":       "has a port",
		" s3://my-bucket":                 "spaces",
		"swift://":                        "names no container",
		"http://[::1":                     "not a URL",
	} {
		_, err := storage.Open(context.Background(), raw, env(map[string]string{
			"BACKUP_S3_ACCESS_KEY_ID": "AK", "BACKUP_S3_SECRET_ACCESS_KEY": "SK",
		}))
		if err == nil {
			t.Errorf("Open(%q): no error", raw)
			continue
		}
		msg := err.Error()
		example := "example: BACKUP_TARGET=s3://my-bucket/mastodon"
		if strings.HasPrefix(raw, "swift:") {
			example = "example: BACKUP_TARGET=swift://my-container/mastodon"
		}
		if strings.HasPrefix(raw, "file:") {
			example = "example: BACKUP_TARGET=file:///var/lib/mastokeeper/backups"
		}
		if !strings.Contains(msg, "BACKUP_TARGET") || !strings.Contains(msg, wantIn) || !strings.Contains(msg, example) {
			t.Errorf("Open(%q) = %q; want it to name BACKUP_TARGET, say %q and give an example", raw, msg, wantIn)
		}
		if strings.Contains(msg, "topsecret") || strings.Contains(msg, "AKIA:") {
			t.Errorf("Open(%q) leaks the credentials: %q", raw, msg)
		}
		var pe problem.List
		if !errors.As(err, &pe) || len(pe) == 0 {
			t.Errorf("Open(%q): %T, want a problem.List", raw, err)
		}
	}
}

func TestCheckListsEveryBadVariable(t *testing.T) {
	for _, tc := range []struct {
		target string
		env    map[string]string
		want   []string
	}{
		{"file:///var/lib/mastokeeper/backups", nil, nil},
		{"s3://my-bucket/x", map[string]string{"BACKUP_S3_ACCESS_KEY_ID": "AK", "BACKUP_S3_SECRET_ACCESS_KEY": "SK"}, nil},
		{"s3://my-bucket/x", nil, []string{"BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_SECRET_ACCESS_KEY"}},
		{"s3://Bad_Bucket/x", map[string]string{
			"BACKUP_S3_ENDPOINT":   "ftp://s3.example.com/path",
			"BACKUP_S3_REGION":     "eu west",
			"BACKUP_S3_PATH_STYLE": "sometimes",
			"BACKUP_S3_PART_SIZE":  "4MiB",
		}, []string{"BACKUP_S3_ACCESS_KEY_ID", "BACKUP_S3_ENDPOINT", "BACKUP_S3_PART_SIZE", "BACKUP_S3_PATH_STYLE", "BACKUP_S3_REGION", "BACKUP_S3_SECRET_ACCESS_KEY", "BACKUP_TARGET"}},
		{"s3://my-bucket", map[string]string{"BACKUP_S3_ACCESS_KEY_ID": "AK", "BACKUP_S3_SECRET_ACCESS_KEY": "SK", "BACKUP_S3_PART_SIZE": "16 furlongs"}, []string{"BACKUP_S3_PART_SIZE"}},
		{"s3://my-bucket", map[string]string{"BACKUP_S3_ACCESS_KEY_ID": "AK", "BACKUP_S3_SECRET_ACCESS_KEY": "SK", "BACKUP_S3_PART_SIZE": "6GiB"}, []string{"BACKUP_S3_PART_SIZE"}},
		{"s3://my-bucket", map[string]string{"BACKUP_S3_ACCESS_KEY_ID": "AK", "BACKUP_S3_SECRET_ACCESS_KEY": "SK", "BACKUP_S3_ENDPOINT": "https://user:pw@s3.example.com"}, []string{"BACKUP_S3_ENDPOINT"}},
		{"swift://c/x", map[string]string{"BACKUP_SWIFT_AUTH_URL": "https://auth.example.com/v3", "BACKUP_SWIFT_USER": "u", "BACKUP_SWIFT_KEY": "k"}, nil},
		{"swift://c/x", nil, []string{"BACKUP_SWIFT_AUTH_URL", "BACKUP_SWIFT_USER"}},
		{"swift://c/x", map[string]string{
			"BACKUP_SWIFT_AUTH_URL":     "auth.example.com",
			"BACKUP_SWIFT_USER":         "u",
			"BACKUP_SWIFT_SEGMENT_SIZE": "lots",
		}, []string{"BACKUP_SWIFT_AUTH_URL", "BACKUP_SWIFT_KEY", "BACKUP_SWIFT_SEGMENT_SIZE"}},
		{"swift://c", map[string]string{
			"BACKUP_SWIFT_AUTH_URL":                      "https://auth.example.com/v2.0",
			"BACKUP_SWIFT_APPLICATION_CREDENTIAL_SECRET": "s",
			"BACKUP_SWIFT_SEGMENT_SIZE":                  "512KiB",
		}, []string{"BACKUP_SWIFT_APPLICATION_CREDENTIAL_ID", "BACKUP_SWIFT_AUTH_URL", "BACKUP_SWIFT_SEGMENT_SIZE"}},
		{"swift://c", map[string]string{
			"BACKUP_SWIFT_AUTH_URL": "https://auth.example.com/", "BACKUP_SWIFT_USER": "u", "BACKUP_SWIFT_KEY": "k",
		}, []string{"BACKUP_SWIFT_AUTH_URL"}},
		{"swift://c", map[string]string{
			"BACKUP_SWIFT_AUTH_URL": "https://auth.example.com/v3", "BACKUP_SWIFT_USER": "u", "BACKUP_SWIFT_KEY": "k",
			"BACKUP_SWIFT_APPLICATION_CREDENTIAL_ID": "id", "BACKUP_SWIFT_APPLICATION_CREDENTIAL_SECRET": "s",
		}, []string{"BACKUP_SWIFT_USER"}},
		{"gopher://x", nil, []string{"BACKUP_TARGET"}},
	} {
		problems := storage.Check(tc.target, env(tc.env))
		if got := vars(problems); strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("Check(%q, %v):\n got %v\nwant %v\n%v", tc.target, tc.env, got, tc.want, problems)
		}
		for _, p := range problems {
			if p.What == "" || p.Example == "" && p.Var != "BACKUP_SWIFT_USER" {
				t.Errorf("Check(%q): problem without explanation or example: %+v", tc.target, p)
			}
			for _, secret := range []string{"pw@", ":pw", "SK", "k\""} {
				if v := tc.env["BACKUP_S3_SECRET_ACCESS_KEY"]; v != "" && strings.Contains(p.What, `"`+v+`"`) {
					t.Errorf("problem shows the secret: %v", p)
				}
				if strings.Contains(p.What, secret) {
					t.Errorf("problem shows a credential (%q): %v", secret, p)
				}
			}
		}
		// Open fails exactly when Check finds problems, with all of them.
		_, err := storage.Open(context.Background(), tc.target, env(tc.env))
		if (err != nil) != (len(problems) > 0) && !strings.HasPrefix(tc.target, "file:") {
			t.Errorf("Open(%q) = %v, but Check found %v", tc.target, err, problems)
		}
		if err != nil {
			for _, p := range problems {
				if !strings.Contains(err.Error(), p.Var) {
					t.Errorf("Open(%q)'s error %q misses %s", tc.target, err, p.Var)
				}
			}
		}
	}
}

func TestSizeVariablesTakePostgresAndIECUnitsAlike(t *testing.T) {
	env := func(v string) func(string) string { return func(string) string { return v } }
	for in, want := range map[string]int64{"32MB": 32 << 20, "32MiB": 32 << 20, "": 16 << 20} {
		if n, p := storage.SizeVar(env(in), "BACKUP_S3_PART_SIZE", 16<<20, 5<<20, 5<<30); p != nil || n != want {
			t.Errorf("SizeVar(%q) = %d, %v; want %d", in, n, p, want)
		}
	}
	for in, what := range map[string]string{"4MiB": "below the minimum, 5MiB", "16 furlongs": "kB, MB, GB", "6GB": "above the maximum, 5GiB"} {
		_, p := storage.SizeVar(env(in), "BACKUP_S3_PART_SIZE", 16<<20, 5<<20, 5<<30)
		if p == nil || !strings.Contains(p.String(), what) || !strings.HasPrefix(p.String(), "BACKUP_S3_PART_SIZE: ") || !strings.HasSuffix(p.String(), "(example: BACKUP_S3_PART_SIZE=16MiB)") {
			t.Errorf("SizeVar(%q) = %v; want a problem saying %q", in, p, what)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pass@host/x":                                   "https://[redacted]@host/x",
		`Get "https://AKIA123@host/b?X-Amz-Signature=abcd&x=1": EOF`: `Get "https://[redacted]@host/b?X-Amz-Signature=[redacted]&x=1": EOF`,
		"token=abc123 and ?temp_url_sig=deadbeef&temp_url_expires=1": "token=abc123 and ?temp_url_sig=[redacted]&temp_url_expires=1",
		"X-Auth-Token: AUTH_tk1234567890":                            "X-Auth-Token: [redacted]",
		"plain text without secrets":                                 "plain text without secrets",
	} {
		if got := storage.Redact(in); got != want {
			t.Errorf("Redact(%q)\n = %q\nwant %q", in, got, want)
		}
	}
	if got := storage.Redact("key s3cr3t/+= in s3cr3t%2F%2B%3D and ab", "s3cr3t/+=", "ab", ""); got != "key [redacted] in [redacted] and ab" {
		t.Errorf("Redact with secrets = %q", got)
	}
	base := errors.New("wrapped: " + storage.ErrNotFound.Error())
	err := storage.RedactError(errors.Join(storage.ErrNotFound, errors.New("secret-value here")), "secret-value")
	if !errors.Is(err, storage.ErrNotFound) || strings.Contains(err.Error(), "secret-value") {
		t.Errorf("RedactError = %v (Is ErrNotFound: %v)", err, errors.Is(err, storage.ErrNotFound))
	}
	if storage.RedactError(base, "zzzz") != base {
		t.Error("RedactError without a secret in the text should return err itself")
	}
	if storage.RedactError(nil, "x") != nil {
		t.Error("RedactError(nil) != nil")
	}
}

func TestCheckKey(t *testing.T) {
	for _, k := range []string{"a", "a/b", "a/b.c", ".hidden", "a..b", "with space", "é"} {
		if err := storage.CheckKey(k); err != nil {
			t.Errorf("CheckKey(%q) = %v", k, err)
		}
	}
	for _, k := range []string{"", "/a", "a/", "a//b", "..", "a/..", "./a", "a/./b", "a\x00b"} {
		if err := storage.CheckKey(k); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("CheckKey(%q) = %v, want ErrInvalidKey", k, err)
		}
	}
	for _, p := range []string{"", "a", "a/", "a/b-"} {
		if err := storage.CheckPrefix(p); err != nil {
			t.Errorf("CheckPrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"/", "/a", "a//", "../", "a/../"} {
		if err := storage.CheckPrefix(p); err == nil {
			t.Errorf("CheckPrefix(%q): no error", p)
		}
	}
}
