package postgres

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
)

// The SCRAM-SHA-256 exchange of RFC 7677, section 3: user "user",
// password "pencil".
const (
	rfcPassword        = "pencil"
	rfcSalt            = "W22ZaJ0SNY7soEsUEjb6gQ=="
	rfcIterations      = 4096
	rfcClientFirstBare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst     = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinalBare = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	rfcClientProof     = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerSignature = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// TestScramKeys_RFC7677 checks the keys the way a server uses them: the
// ServerKey must produce the RFC's server signature, and the StoredKey must
// accept the RFC's client proof (ClientKey = proof XOR
// HMAC(StoredKey, AuthMessage), and H(ClientKey) = StoredKey).
func TestScramKeys_RFC7677(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	stored, server, err := scramKeys(rfcPassword, salt, rfcIterations)
	if err != nil {
		t.Fatal(err)
	}
	auth := rfcClientFirstBare + "," + rfcServerFirst + "," + rfcClientFinalBare

	if got := base64.StdEncoding.EncodeToString(hmacSHA256(server, auth)); got != rfcServerSignature {
		t.Errorf("server signature = %s; want RFC 7677's %s", got, rfcServerSignature)
	}

	proof, _ := base64.StdEncoding.DecodeString(rfcClientProof)
	sig := hmacSHA256(stored, auth)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ sig[i]
	}
	if h := sha256.Sum256(clientKey); !bytes.Equal(h[:], stored) {
		t.Errorf("StoredKey %x does not accept RFC 7677's client proof", stored)
	}
}

func TestScramKeys_DependOnPasswordSaltAndIterations(t *testing.T) {
	salt := []byte("0123456789abcdef")
	s1, v1, _ := scramKeys("pencil", salt, 4096)
	for name, args := range map[string]struct {
		pw   string
		salt []byte
		iter int
	}{
		"password":   {"pencil2", salt, 4096},
		"salt":       {"pencil", []byte("0123456789abcdeF"), 4096},
		"iterations": {"pencil", salt, 4095},
	} {
		s2, v2, err := scramKeys(args.pw, args.salt, args.iter)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(s1, s2) || bytes.Equal(v1, v2) {
			t.Errorf("changing the %s did not change the keys", name)
		}
	}
}

var verifierFormat = regexp.MustCompile(`^SCRAM-SHA-256\$4096:([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)$`)

func TestScramVerifier_HasPostgreSQLsFormat(t *testing.T) {
	v, err := scramVerifier("Abcdefgh12345678Abcdefgh12345678")
	if err != nil {
		t.Fatal(err)
	}
	m := verifierFormat.FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("verifier %q is not SCRAM-SHA-256$4096:<salt>$<stored>:<server>", v)
	}
	for i, want := range []int{16, 32, 32} {
		b, err := base64.StdEncoding.DecodeString(m[i+1])
		if err != nil || len(b) != want {
			t.Errorf("part %d decodes to %d bytes (err %v); want %d", i+1, len(b), err, want)
		}
	}
	if strings.Contains(v, "Abcdefgh12345678") {
		t.Error("the verifier contains the password")
	}
}

func TestScramVerifier_SaltIsFreshEachTime(t *testing.T) {
	a, _ := scramVerifier("same password")
	b, _ := scramVerifier("same password")
	if a == b {
		t.Error("two verifiers of one password are identical; the salt must be random")
	}
}

func TestScramMatches(t *testing.T) {
	v, err := scramVerifier("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !scramMatches(v, "correct horse") {
		t.Error("verifier does not match the password it was made from")
	}
	for _, other := range []string{"correct horsE", "correct horse ", "", "wrong"} {
		if scramMatches(v, other) {
			t.Errorf("verifier matches %q", other)
		}
	}
}

func TestScramMatches_RFC7677Verifier(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	stored, server, _ := scramKeys(rfcPassword, salt, rfcIterations)
	b64 := base64.StdEncoding.EncodeToString
	v := "SCRAM-SHA-256$4096:" + rfcSalt + "$" + b64(stored) + ":" + b64(server)
	if !scramMatches(v, rfcPassword) {
		t.Errorf("verifier %s does not match %q", v, rfcPassword)
	}
	if scramMatches(v, "pencil!") {
		t.Error("verifier matches another password")
	}
}

func TestScramMatches_RejectsMalformedVerifiers(t *testing.T) {
	good, _ := scramVerifier("pw12345678")
	params, keys, _ := strings.Cut(strings.TrimPrefix(good, "SCRAM-SHA-256$"), "$")
	_, salt, _ := strings.Cut(params, ":")
	stored, server, _ := strings.Cut(keys, ":")
	for name, v := range map[string]string{
		"empty":             "",
		"md5":               "md5" + strings.Repeat("0", 32),
		"plain password":    "pw12345678",
		"other mechanism":   "SCRAM-SHA-1$4096:" + salt + "$" + stored + ":" + server,
		"no keys":           "SCRAM-SHA-256$4096:" + salt,
		"no salt":           "SCRAM-SHA-256$4096$" + stored + ":" + server,
		"one key":           "SCRAM-SHA-256$4096:" + salt + "$" + stored,
		"iterations word":   "SCRAM-SHA-256$many:" + salt + "$" + stored + ":" + server,
		"zero iterations":   "SCRAM-SHA-256$0:" + salt + "$" + stored + ":" + server,
		"negative":          "SCRAM-SHA-256$-1:" + salt + "$" + stored + ":" + server,
		"huge iterations":   "SCRAM-SHA-256$999999999:" + salt + "$" + stored + ":" + server,
		"other iterations":  "SCRAM-SHA-256$4097:" + salt + "$" + stored + ":" + server,
		"bad salt base64":   "SCRAM-SHA-256$4096:!!!$" + stored + ":" + server,
		"bad stored base64": "SCRAM-SHA-256$4096:" + salt + "$***:" + server,
		"bad server base64": "SCRAM-SHA-256$4096:" + salt + "$" + stored + ":***",
		"keys swapped":      "SCRAM-SHA-256$4096:" + salt + "$" + server + ":" + stored,
		"truncated key":     "SCRAM-SHA-256$4096:" + salt + "$" + stored[:20] + ":" + server,
	} {
		if scramMatches(v, "pw12345678") {
			t.Errorf("%s: scramMatches(%q) = true", name, v)
		}
	}
}
