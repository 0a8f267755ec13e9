package instance

import (
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// The secrets an instance needs, by the environment variable Mastodon (or
// the postgres image) reads them from.
const (
	SecretKeyBase          = "SECRET_KEY_BASE"
	ARDeterministicKey     = "ACTIVE_RECORD_ENCRYPTION_DETERMINISTIC_KEY"
	ARKeyDerivationSalt    = "ACTIVE_RECORD_ENCRYPTION_KEY_DERIVATION_SALT"
	ARPrimaryKey           = "ACTIVE_RECORD_ENCRYPTION_PRIMARY_KEY"
	VAPIDPrivateKey        = "VAPID_PRIVATE_KEY"
	VAPIDPublicKey         = "VAPID_PUBLIC_KEY"
	DBPassword             = "DB_PASS"           // the mastodon role's password
	PostgresPassword       = "POSTGRES_PASSWORD" // the PostgreSQL superuser's password
	activeRecordUnsafeMark = "DO_NOT_USE_IN_PRODUCTION"
)

// SecretNames lists every secret in the order they are printed and stored.
var SecretNames = []string{
	SecretKeyBase, ARDeterministicKey, ARKeyDerivationSalt, ARPrimaryKey,
	VAPIDPrivateKey, VAPIDPublicKey, DBPassword, PostgresPassword,
}

// Secrets maps a secret's variable name to its value.
type Secrets map[string]string

// GenerateSecrets makes a fresh set in Mastodon's own formats:
// SECRET_KEY_BASE as SecureRandom.hex(64), the Active Record keys as
// SecureRandom.alphanumeric(32), VAPID as a P-256 pair in padded URL-safe
// base64. Database passwords are alphanumeric so that no consumer (a URL, a
// libpq string, a shell in someone's script) ever needs to quote them.
func GenerateSecrets(r io.Reader) (Secrets, error) {
	s := Secrets{}
	b := make([]byte, 64)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("generate %s: %w", SecretKeyBase, err)
	}
	s[SecretKeyBase] = hex.EncodeToString(b)
	for _, name := range []string{ARDeterministicKey, ARKeyDerivationSalt, ARPrimaryKey, DBPassword, PostgresPassword} {
		v, err := alphanumeric(r, 32)
		if err != nil {
			return nil, fmt.Errorf("generate %s: %w", name, err)
		}
		s[name] = v
	}
	priv, pub, err := GenerateVAPID(r)
	if err != nil {
		return nil, err
	}
	s[VAPIDPrivateKey], s[VAPIDPublicKey] = priv, pub
	return s, nil
}

// GenerateVAPID returns a web push key pair as Mastodon stores it: the
// 32-byte scalar and the 65-byte uncompressed point, both URL-safe base64
// with padding.
func GenerateVAPID(r io.Reader) (private, public string, err error) {
	k, err := ecdh.P256().GenerateKey(r)
	if err != nil {
		return "", "", fmt.Errorf("generate VAPID key pair: %w", err)
	}
	return base64.URLEncoding.EncodeToString(k.Bytes()),
		base64.URLEncoding.EncodeToString(k.PublicKey().Bytes()), nil
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// alphanumeric draws n characters uniformly from [A-Za-z0-9], rejecting
// bytes that would bias the choice, as Ruby's SecureRandom.alphanumeric does.
func alphanumeric(r io.Reader, n int) (string, error) {
	out := make([]byte, 0, n)
	buf := make([]byte, n)
	const limit = 256 - 256%len(alnum)
	for len(out) < n {
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		for _, c := range buf {
			if int(c) < limit && len(out) < n {
				out = append(out, alnum[int(c)%len(alnum)])
			}
		}
	}
	return string(out), nil
}

// RandomReader is where secrets come from; a variable so that nothing else
// in the program is tempted to use a weaker source.
var RandomReader io.Reader = rand.Reader

// CheckSecret says what is wrong with a secret someone provides (an
// existing instance moving in), or "" when it is usable. Adopted values are
// held to what Mastodon itself accepts rather than to the exact generated
// format: an older instance may have been set up by other tools.
func CheckSecret(name, v string) string {
	if v == "" {
		return "is empty"
	}
	if strings.ContainsAny(v, " \t\r\n") {
		return "contains white space"
	}
	switch name {
	case SecretKeyBase:
		if len(v) < 64 {
			return fmt.Sprintf("is %d characters long; Mastodon's are 128 hex characters", len(v))
		}
	case ARDeterministicKey, ARKeyDerivationSalt, ARPrimaryKey:
		if strings.HasSuffix(v, activeRecordUnsafeMark) {
			return "ends in " + activeRecordUnsafeMark + ", which Mastodon refuses to boot with"
		}
		if len(v) < 12 {
			return fmt.Sprintf("is %d characters long; Mastodon's are 32", len(v))
		}
	case VAPIDPrivateKey:
		b, err := decodeBase64URL(v)
		if err != nil || len(b) != 32 {
			return "is not a URL-safe base64 P-256 private key (32 bytes)"
		}
		if _, err := ecdh.P256().NewPrivateKey(b); err != nil {
			return "is not a valid P-256 private key"
		}
	case VAPIDPublicKey:
		b, err := decodeBase64URL(v)
		if err != nil || len(b) != 65 || b[0] != 4 {
			return "is not a URL-safe base64 uncompressed P-256 public key (65 bytes)"
		}
	case DBPassword, PostgresPassword:
		if len(v) < 8 {
			return "is shorter than 8 characters"
		}
		// The keeper sends PostgreSQL a SCRAM verifier it computes itself,
		// without the SASLprep normalisation libpq applies to other
		// characters: only printable ASCII hashes the same on both sides.
		for _, r := range v {
			if r < 0x21 || r > 0x7e {
				return "must be printable ASCII without spaces"
			}
		}
	}
	return ""
}

// CheckVAPIDPair says whether public is the key of private.
func CheckVAPIDPair(private, public string) string {
	pb, err := decodeBase64URL(private)
	if err != nil {
		return "VAPID_PRIVATE_KEY is not URL-safe base64"
	}
	k, err := ecdh.P256().NewPrivateKey(pb)
	if err != nil {
		return "VAPID_PRIVATE_KEY is not a valid P-256 private key"
	}
	if base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes()) != strings.TrimRight(public, "=") {
		return "VAPID_PUBLIC_KEY does not belong to VAPID_PRIVATE_KEY"
	}
	return ""
}

// decodeBase64URL accepts padded and unpadded input, as Mastodon does.
func decodeBase64URL(v string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(v, "="))
}
