package instance

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"regexp"
	"strings"
	"testing"
)

var (
	lowerHex128 = regexp.MustCompile(`^[0-9a-f]{128}$`)
	alnum32     = regexp.MustCompile(`^[A-Za-z0-9]{32}$`)
	urlB64      = regexp.MustCompile(`^[A-Za-z0-9_-]+=*$`)
)

func generate(t *testing.T) Secrets {
	t.Helper()
	s, err := GenerateSecrets(rand.Reader)
	if err != nil {
		t.Fatalf("GenerateSecrets: %v", err)
	}
	return s
}

func TestGenerateSecrets_ProducesEveryNamedSecretAndNothingElse(t *testing.T) {
	s := generate(t)
	if len(s) != len(SecretNames) {
		t.Errorf("got %d secrets, want %d (%v)", len(s), len(SecretNames), SecretNames)
	}
	for _, name := range SecretNames {
		if s[name] == "" {
			t.Errorf("%s was not generated", name)
		}
	}
}

func TestGenerateSecrets_SecretKeyBaseIs128LowercaseHex(t *testing.T) {
	if v := generate(t)[SecretKeyBase]; !lowerHex128.MatchString(v) {
		t.Errorf("SECRET_KEY_BASE = %q; want 128 lowercase hex characters (SecureRandom.hex(64))", v)
	}
}

func TestGenerateSecrets_ActiveRecordKeysAndPasswordsAre32Alphanumerics(t *testing.T) {
	s := generate(t)
	for _, name := range []string{ARDeterministicKey, ARKeyDerivationSalt, ARPrimaryKey, DBPassword, PostgresPassword} {
		if !alnum32.MatchString(s[name]) {
			t.Errorf("%s = %q; want 32 characters of [A-Za-z0-9]", name, s[name])
		}
	}
}

func TestGenerateSecrets_VAPIDPrivateKeyIsPaddedURLBase64Of32ByteScalar(t *testing.T) {
	v := generate(t)[VAPIDPrivateKey]
	if len(v) != 44 || !urlB64.MatchString(v) || !strings.HasSuffix(v, "=") {
		t.Fatalf("VAPID_PRIVATE_KEY = %q; want 44 characters of padded URL-safe base64", v)
	}
	b, err := base64.URLEncoding.DecodeString(v)
	if err != nil || len(b) != 32 {
		t.Fatalf("VAPID_PRIVATE_KEY decodes to %d bytes (err %v); want a 32-byte scalar", len(b), err)
	}
	if _, err := ecdh.P256().NewPrivateKey(b); err != nil {
		t.Errorf("VAPID_PRIVATE_KEY is not a P-256 scalar: %v", err)
	}
}

func TestGenerateSecrets_VAPIDPublicKeyIsPaddedURLBase64OfUncompressedPoint(t *testing.T) {
	v := generate(t)[VAPIDPublicKey]
	if len(v) != 88 || !urlB64.MatchString(v) || !strings.HasSuffix(v, "=") {
		t.Fatalf("VAPID_PUBLIC_KEY = %q; want 88 characters of padded URL-safe base64", v)
	}
	b, err := base64.URLEncoding.DecodeString(v)
	if err != nil || len(b) != 65 || b[0] != 0x04 {
		t.Fatalf("VAPID_PUBLIC_KEY decodes to % x (err %v); want a 65-byte point starting 0x04", b, err)
	}
	if _, err := ecdh.P256().NewPublicKey(b); err != nil {
		t.Errorf("VAPID_PUBLIC_KEY is not a point on P-256: %v", err)
	}
}

func TestGenerateSecrets_VAPIDPublicKeyDerivesFromPrivateKey(t *testing.T) {
	s := generate(t)
	priv, _ := base64.URLEncoding.DecodeString(s[VAPIDPrivateKey])
	k, err := ecdh.P256().NewPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.URLEncoding.EncodeToString(k.PublicKey().Bytes()); got != s[VAPIDPublicKey] {
		t.Errorf("public key of VAPID_PRIVATE_KEY is %s; VAPID_PUBLIC_KEY is %s", got, s[VAPIDPublicKey])
	}
}

func TestGenerateSecrets_TwoGenerationsShareNoValue(t *testing.T) {
	a, b := generate(t), generate(t)
	for _, name := range SecretNames {
		if a[name] == b[name] {
			t.Errorf("%s was the same in two generations", name)
		}
	}
}

func TestGenerateSecrets_SecretsWithinOneSetAreDistinct(t *testing.T) {
	s := generate(t)
	seen := map[string]string{}
	for _, name := range SecretNames {
		if other, ok := seen[s[name]]; ok {
			t.Errorf("%s has the same value as %s", name, other)
		}
		seen[s[name]] = name
	}
}

type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestGenerateSecrets_FailsCleanlyWhenTheRandomSourceFails(t *testing.T) {
	boom := errors.New("entropy exhausted")
	s, err := GenerateSecrets(failingReader{boom})
	if err == nil {
		t.Fatalf("want an error, got secrets %v", s)
	}
	if s != nil {
		t.Errorf("want no secrets alongside the error, got %v", s)
	}
	if !errors.Is(err, boom) {
		t.Errorf("error %v does not wrap the reader's error", err)
	}
	if !strings.Contains(err.Error(), SecretKeyBase) {
		t.Errorf("error %q does not say which secret failed", err)
	}
}

func TestGenerateSecrets_FailsCleanlyWhenTheRandomSourceRunsDry(t *testing.T) {
	// Enough for SECRET_KEY_BASE, not for the first Active Record key.
	r := io.LimitReader(rand.Reader, 64+10)
	s, err := GenerateSecrets(r)
	if err == nil || s != nil {
		t.Fatalf("GenerateSecrets = %v, %v; want nil and an error", s, err)
	}
	if !strings.Contains(err.Error(), ARDeterministicKey) {
		t.Errorf("error %q does not name %s", err, ARDeterministicKey)
	}
}

func TestAlphanumeric_EveryOneOf62CharactersAppears(t *testing.T) {
	counts := map[rune]int{}
	const draws = 20000
	v, err := alphanumeric(rand.Reader, draws)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != draws {
		t.Fatalf("got %d characters, want %d", len(v), draws)
	}
	for _, c := range v {
		counts[c]++
	}
	if len(counts) != 62 {
		t.Errorf("%d distinct characters appeared in %d draws; want all 62", len(counts), draws)
	}
	// Expected about 322 of each; a bias such as c%62 without rejection
	// would still pass this, but a missing or grossly skewed character not.
	for _, c := range alnum {
		if n := counts[c]; n < 200 || n > 450 {
			t.Errorf("%q appeared %d times in %d draws; expected about %d", c, n, draws, draws/62)
		}
	}
}

// cyclingReader returns the bytes of pattern over and over.
type cyclingReader struct {
	pattern []byte
	i       int
}

func (r *cyclingReader) Read(p []byte) (int, error) {
	for j := range p {
		p[j] = r.pattern[r.i%len(r.pattern)]
		r.i++
	}
	return len(p), nil
}

func TestAlphanumeric_RejectsBytesThatWouldBiasTheChoice(t *testing.T) {
	// 248..255 would map to 'A'..'H' a second time; they must be skipped.
	r := &cyclingReader{pattern: []byte{248, 249, 250, 251, 252, 253, 254, 255, 0, 61}}
	v, err := alphanumeric(r, 4)
	if err != nil {
		t.Fatal(err)
	}
	if v != "A9A9" {
		t.Errorf("alphanumeric = %q; want %q (bytes >= 248 rejected, 0 -> 'A', 61 -> '9')", v, "A9A9")
	}
}

func TestAlphanumeric_KeepsReadingWhileEveryByteIsRejected(t *testing.T) {
	// A whole buffer of rejected bytes, then usable ones.
	pattern := append(bytes.Repeat([]byte{255}, 32), bytes.Repeat([]byte{26}, 32)...)
	v, err := alphanumeric(&cyclingReader{pattern: pattern}, 32)
	if err != nil {
		t.Fatal(err)
	}
	if v != strings.Repeat("a", 32) {
		t.Errorf("alphanumeric = %q; want 32 'a's", v)
	}
}

func TestAlphanumeric_FailsWhenTheReaderFailsMidway(t *testing.T) {
	r := io.MultiReader(bytes.NewReader(bytes.Repeat([]byte{255}, 32)), failingReader{io.ErrUnexpectedEOF})
	if v, err := alphanumeric(r, 32); err == nil {
		t.Errorf("alphanumeric = %q, nil; want an error", v)
	}
}

func TestCheckSecret_AcceptsGeneratedValues(t *testing.T) {
	s := generate(t)
	for _, name := range SecretNames {
		if msg := CheckSecret(name, s[name]); msg != "" {
			t.Errorf("CheckSecret(%s, generated) = %q; want accepted", name, msg)
		}
	}
}

func TestCheckSecret_AcceptsUnpaddedVAPIDKeys(t *testing.T) {
	s := generate(t)
	for _, name := range []string{VAPIDPrivateKey, VAPIDPublicKey} {
		v := strings.TrimRight(s[name], "=")
		if msg := CheckSecret(name, v); msg != "" {
			t.Errorf("CheckSecret(%s, unpadded) = %q; want accepted", name, msg)
		}
	}
}

func TestCheckSecret_Rejects(t *testing.T) {
	good := generate(t)
	pub, _ := base64.URLEncoding.DecodeString(good[VAPIDPublicKey])
	compressed := append([]byte{0x02}, pub[1:33]...)
	tests := []struct {
		name, secret, value, wantIn string
	}{
		{"empty", SecretKeyBase, "", "empty"},
		{"empty password", DBPassword, "", "empty"},
		{"inner space", ARPrimaryKey, "abcdefgh ijklmnopqrstuvwxyz012345", "white space"},
		{"trailing newline", SecretKeyBase, good[SecretKeyBase] + "\n", "white space"},
		{"tab", DBPassword, "abc\tdefghijk", "white space"},
		{"short SECRET_KEY_BASE", SecretKeyBase, strings.Repeat("a", 63), "63 characters"},
		{"AR key marked unsafe", ARDeterministicKey, "abcdefghijklmnopDO_NOT_USE_IN_PRODUCTION", "DO_NOT_USE_IN_PRODUCTION"},
		{"AR salt marked unsafe", ARKeyDerivationSalt, "saltsaltsaltsaltDO_NOT_USE_IN_PRODUCTION", "DO_NOT_USE_IN_PRODUCTION"},
		{"short AR key", ARPrimaryKey, "abc", "3 characters"},
		{"VAPID private not base64", VAPIDPrivateKey, "not*base64*at*all", "P-256"},
		{"VAPID private wrong length", VAPIDPrivateKey, base64.URLEncoding.EncodeToString(make([]byte, 31)), "32 bytes"},
		{"VAPID private zero scalar", VAPIDPrivateKey, base64.URLEncoding.EncodeToString(make([]byte, 32)), "P-256"},
		{"VAPID private is the public key", VAPIDPrivateKey, good[VAPIDPublicKey], "P-256"},
		{"VAPID public compressed", VAPIDPublicKey, base64.URLEncoding.EncodeToString(compressed), "65 bytes"},
		{"VAPID public is the private key", VAPIDPublicKey, good[VAPIDPrivateKey], "65 bytes"},
		{"VAPID public std base64", VAPIDPublicKey, "+/" + good[VAPIDPublicKey][2:], "65 bytes"},
		{"short DB_PASS", DBPassword, "1234567", "8 characters"},
		{"short POSTGRES_PASSWORD", PostgresPassword, "pw", "8 characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := CheckSecret(tc.secret, tc.value)
			if msg == "" {
				t.Fatalf("CheckSecret(%s, %q) accepted it", tc.secret, tc.value)
			}
			if !strings.Contains(msg, tc.wantIn) {
				t.Errorf("CheckSecret(%s, ...) = %q; want it to mention %q", tc.secret, msg, tc.wantIn)
			}
			if len(tc.value) >= 8 && strings.Contains(msg, tc.value) {
				t.Errorf("message %q repeats the secret's value", msg)
			}
		})
	}
}

func TestCheckVAPIDPair(t *testing.T) {
	a, b := generate(t), generate(t)
	tests := []struct {
		name, priv, pub string
		ok              bool
	}{
		{"generated pair", a[VAPIDPrivateKey], a[VAPIDPublicKey], true},
		{"unpadded pair", strings.TrimRight(a[VAPIDPrivateKey], "="), strings.TrimRight(a[VAPIDPublicKey], "="), true},
		{"padded private, unpadded public", a[VAPIDPrivateKey], strings.TrimRight(a[VAPIDPublicKey], "="), true},
		{"mismatched pair", a[VAPIDPrivateKey], b[VAPIDPublicKey], false},
		{"swapped", a[VAPIDPublicKey], a[VAPIDPrivateKey], false},
		{"private not base64", "!!!", a[VAPIDPublicKey], false},
		{"empty public", a[VAPIDPrivateKey], "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := CheckVAPIDPair(tc.priv, tc.pub)
			if tc.ok && msg != "" {
				t.Errorf("CheckVAPIDPair = %q; want the pair accepted", msg)
			}
			if !tc.ok && msg == "" {
				t.Errorf("CheckVAPIDPair accepted a bad pair")
			}
		})
	}
}

func TestCheckVAPIDPair_MismatchNamesThePublicKey(t *testing.T) {
	a, b := generate(t), generate(t)
	msg := CheckVAPIDPair(a[VAPIDPrivateKey], b[VAPIDPublicKey])
	if !strings.Contains(msg, VAPIDPublicKey) || !strings.Contains(msg, VAPIDPrivateKey) {
		t.Errorf("message %q should name both variables", msg)
	}
	if strings.Contains(msg, a[VAPIDPrivateKey]) || strings.Contains(msg, b[VAPIDPublicKey]) {
		t.Errorf("message %q repeats a key", msg)
	}
}

func TestGenerateVAPID_PairPassesTheChecks(t *testing.T) {
	priv, pub, err := GenerateVAPID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if msg := CheckVAPIDPair(priv, pub); msg != "" {
		t.Errorf("CheckVAPIDPair(generated) = %q", msg)
	}
}

func TestCheckSecret_DBPassMustBePrintableASCII(t *testing.T) {
	// A no-break space (SASLprep maps it to a space), a soft hyphen
	// (SASLprep maps it to nothing) and full-width letters (NFKC makes them
	// ASCII), as a copy-and-paste may bring them.
	for _, v := range []string{"correct\u00a0horse-battery", "correct\u00adhorsebattery", "pass-\uff46\uff55\uff4c\uff4c"} {
		if msg := CheckSecret(DBPassword, v); msg == "" {
			t.Errorf("CheckSecret(DB_PASS, %q) accepted it; postgres.scramVerifier only handles printable ASCII", v)
		}
	}
}
