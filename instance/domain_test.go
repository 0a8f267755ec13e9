package instance

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// envOf is a getenv backed by a map.
func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestResolveDomain_LocalDomainWins(t *testing.T) {
	d, src, err := ResolveDomain(envOf(map[string]string{
		"LOCAL_DOMAIN":       "social.example.org",
		"BALENA_DEVICE_UUID": "0123456789abcdef0123456789abcdef",
	}))
	if err != nil || d != "social.example.org" || src != FromVariable {
		t.Errorf("ResolveDomain = %q, %v, %v; want social.example.org, FromVariable, nil", d, src, err)
	}
}

func TestResolveDomain_BadLocalDomainIsAnErrorWithAnExample(t *testing.T) {
	_, _, err := ResolveDomain(envOf(map[string]string{
		"LOCAL_DOMAIN":       "https://Social.Example.org",
		"BALENA_DEVICE_UUID": "0123456789abcdef0123456789abcdef",
	}))
	if err == nil {
		t.Fatal("want an error; a bad LOCAL_DOMAIN must not fall back to the public URL")
	}
	for _, want := range []string{"LOCAL_DOMAIN", "https://Social.Example.org", "LOCAL_DOMAIN=social.example.org"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestResolveDomain_BalenaDeviceUUIDGivesThePublicURLHost(t *testing.T) {
	d, src, err := ResolveDomain(envOf(map[string]string{"BALENA_DEVICE_UUID": "0123456789ABCDEF0123456789abcdef"}))
	if err != nil {
		t.Fatal(err)
	}
	if want := "0123456789abcdef0123456789abcdef.balena-devices.com"; d != want {
		t.Errorf("domain = %q; want %q", d, want)
	}
	if src != FromPublicURL {
		t.Errorf("source = %v; want FromPublicURL", src)
	}
}

func TestResolveDomain_UnusableDeviceUUIDIsAnError(t *testing.T) {
	_, _, err := ResolveDomain(envOf(map[string]string{"BALENA_DEVICE_UUID": "not_a_uuid"}))
	if err == nil || !strings.Contains(err.Error(), "BALENA_DEVICE_UUID") {
		t.Errorf("ResolveDomain = %v; want an error naming BALENA_DEVICE_UUID", err)
	}
}

func TestResolveDomain_NeitherSetAsksForLocalDomainWithAnExample(t *testing.T) {
	_, _, err := ResolveDomain(envOf(nil))
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{"LOCAL_DOMAIN", "LOCAL_DOMAIN=social.example.org"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestCheckDomain(t *testing.T) {
	long := strings.Repeat(strings.Repeat("a", 63)+".", 4)[:254] // 4 labels, 254 chars
	tests := []struct {
		domain string
		ok     bool
	}{
		{"social.example.org", true},
		{"a-b.example.co.uk", true},
		{"xn--bcher-kva.example", true},
		{"1.example.org", true},
		{strings.Repeat("a", 63) + ".example.org", true},
		{"Social.example.org", false},
		{"https://social.example.org", false},
		{"social.example.org/path", false},
		{"localhost", false},
		{"", false},
		{"my_host.example.org", false},
		{"-abc.example.org", false},
		{"abc-.example.org", false},
		{"social..example.org", false},
		{"social.example.org.", false},
		{".example.org", false},
		{"social.example.org:443", false},
		{"so cial.example.org", false},
		{strings.Repeat("a", 64) + ".example.org", false},
		{long, false},
	}
	for _, tc := range tests {
		msg := CheckDomain(tc.domain)
		if tc.ok && msg != "" {
			t.Errorf("CheckDomain(%q) = %q; want accepted", tc.domain, msg)
		}
		if !tc.ok && msg == "" {
			t.Errorf("CheckDomain(%q) accepted it", tc.domain)
		}
	}
}

func TestCheckDomain_SaysWhatIsWrong(t *testing.T) {
	tests := map[string]string{
		"Social.example.org":            "lower case",
		"https://social.example.org":    "without scheme or path",
		"social.example.org/x":          "without scheme or path",
		"localhost":                     "no dot",
		"my_host.example.org":           `"my_host"`,
		strings.Repeat("a.", 127) + "a": "253",
	}
	for d, want := range tests {
		if msg := CheckDomain(d); !strings.Contains(msg, want) {
			t.Errorf("CheckDomain(%.40q) = %q; want it to mention %q", d, msg, want)
		}
	}
}

func TestIsPublicURLHost(t *testing.T) {
	tests := map[string]bool{
		"0123456789abcdef0123456789abcdef.balena-devices.com": true,
		"social.example.org":     false,
		"balena-devices.com":     false,
		"evilbalena-devices.com": false,
	}
	for d, want := range tests {
		if got := IsPublicURLHost(d); got != want {
			t.Errorf("IsPublicURLHost(%q) = %v; want %v", d, got, want)
		}
	}
}

func recordWith(domain string, s Secrets) *Record {
	return &Record{LocalDomain: domain, Secrets: s}
}

func TestGuard_SameDomainIsAccepted(t *testing.T) {
	rec := recordWith("social.example.org", Secrets{SecretKeyBase: "k"})
	for name, env := range map[string]map[string]string{
		"same":  {"LOCAL_DOMAIN": "social.example.org"},
		"unset": {},
	} {
		if err := Guard(rec, envOf(env)); err != nil {
			t.Errorf("%s: Guard = %v; want nil", name, err)
		}
	}
}

func TestGuard_DifferentDomainIsRefusedNamingBoth(t *testing.T) {
	rec := recordWith("social.example.org", Secrets{})
	err := Guard(rec, envOf(map[string]string{"LOCAL_DOMAIN": "other.example.net"}))
	var ge *GuardError
	if !errors.As(err, &ge) {
		t.Fatalf("Guard = %v; want a *GuardError", err)
	}
	if len(ge.Problems) != 1 {
		t.Errorf("problems = %q; want one", ge.Problems)
	}
	for _, want := range []string{"LOCAL_DOMAIN", "social.example.org", "other.example.net", "nothing was changed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestGuard_ProvidedSecretEqualToTheRecordIsAccepted(t *testing.T) {
	s := generate(t)
	env := map[string]string{"LOCAL_DOMAIN": "social.example.org"}
	for _, name := range SecretNames {
		env[name] = s[name]
	}
	if err := Guard(recordWith("social.example.org", s), envOf(env)); err != nil {
		t.Errorf("Guard = %v; want nil", err)
	}
}

func TestGuard_ProvidedSecretThatDiffersIsRefusedWithoutItsValue(t *testing.T) {
	recorded, provided := generate(t), generate(t)
	err := Guard(recordWith("social.example.org", recorded), envOf(map[string]string{
		SecretKeyBase: provided[SecretKeyBase],
	}))
	var ge *GuardError
	if !errors.As(err, &ge) {
		t.Fatalf("Guard = %v; want a *GuardError", err)
	}
	if len(ge.Problems) != 1 || !strings.Contains(ge.Problems[0], SecretKeyBase) {
		t.Errorf("problems = %q; want one naming %s", ge.Problems, SecretKeyBase)
	}
	for _, v := range []string{provided[SecretKeyBase], recorded[SecretKeyBase]} {
		if strings.Contains(err.Error(), v) {
			t.Errorf("error text contains a secret value: %q", err)
		}
	}
}

func TestGuard_ListsEveryProblem(t *testing.T) {
	recorded, provided := generate(t), generate(t)
	env := map[string]string{"LOCAL_DOMAIN": "other.example.net"}
	differing := []string{SecretKeyBase, ARPrimaryKey, VAPIDPrivateKey, PostgresPassword}
	for _, name := range differing {
		env[name] = provided[name]
	}
	env[DBPassword] = recorded[DBPassword] // same: no problem
	err := Guard(recordWith("social.example.org", recorded), envOf(env))
	var ge *GuardError
	if !errors.As(err, &ge) {
		t.Fatalf("Guard = %v; want a *GuardError", err)
	}
	if len(ge.Problems) != 1+len(differing) {
		t.Errorf("got %d problems, want %d:\n%s", len(ge.Problems), 1+len(differing), err)
	}
	for _, name := range append([]string{"LOCAL_DOMAIN"}, differing...) {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error does not name %s:\n%s", name, err)
		}
	}
	if strings.Contains(err.Error(), DBPassword+" is set") {
		t.Errorf("DB_PASS equal to the record was reported:\n%s", err)
	}
	for _, name := range SecretNames {
		if strings.Contains(err.Error(), provided[name]) || strings.Contains(err.Error(), recorded[name]) {
			t.Errorf("error text contains the value of %s", name)
		}
	}
}

func TestNewRecord_AdoptsProvidedSecretsAndGeneratesTheRest(t *testing.T) {
	generated, provided := generate(t), generate(t)
	env := map[string]string{
		SecretKeyBase:      provided[SecretKeyBase],
		ARDeterministicKey: provided[ARDeterministicKey],
		"UNRELATED":        "x",
	}
	rec := NewRecord("social.example.org", envOf(env), generated)
	if rec.LocalDomain != "social.example.org" {
		t.Errorf("LocalDomain = %q", rec.LocalDomain)
	}
	if want := []string{SecretKeyBase, ARDeterministicKey}; !slices.Equal(rec.Adopted, want) {
		t.Errorf("Adopted = %v; want %v", rec.Adopted, want)
	}
	for _, name := range SecretNames {
		want := generated[name]
		if env[name] != "" {
			want = provided[name]
		}
		if rec.Secrets[name] != want {
			t.Errorf("%s was not taken from the right source", name)
		}
	}
	if len(rec.Secrets) != len(SecretNames) {
		t.Errorf("record has %d secrets; want %d", len(rec.Secrets), len(SecretNames))
	}
}

func TestNewRecord_NothingProvidedAdoptsNothing(t *testing.T) {
	generated := generate(t)
	rec := NewRecord("social.example.org", envOf(nil), generated)
	if len(rec.Adopted) != 0 {
		t.Errorf("Adopted = %v; want none", rec.Adopted)
	}
	for _, name := range SecretNames {
		if rec.Secrets[name] != generated[name] {
			t.Errorf("%s is not the generated value", name)
		}
	}
	// The record passes its own guard.
	env := map[string]string{"LOCAL_DOMAIN": "social.example.org"}
	for _, name := range SecretNames {
		env[name] = generated[name]
	}
	if err := Guard(rec, envOf(env)); err != nil {
		t.Errorf("Guard(new record, same env) = %v", err)
	}
}

func TestCheckDomain_RejectsAnIPAddress(t *testing.T) {
	for _, d := range []string{"192.168.1.10", "10.0.0.1", "social.123"} {
		if msg := CheckDomain(d); msg == "" {
			t.Errorf("CheckDomain(%q) accepted it; the last label of a domain name is never all digits", d)
		}
	}
}
