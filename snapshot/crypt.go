package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"filippo.io/age"

	"github.com/mastodon-on-balena/mastodon-balena/problem"
)

// Every object is encrypted with age to the instance's backup key, an
// X25519 key generated once and kept in the keeper's volume: per-object
// encryption stays cheap (no scrypt per media file) and the keeper can read
// its own backups for verification and retention. The backup key itself is
// stored on the target sealed with what the admin holds - the passphrase
// (BACKUP_PASSPHRASE, age's scrypt) or their own age key
// (BACKUP_AGE_RECIPIENT) - so a new device can open the backups with that
// alone.
type Key struct{ id *age.X25519Identity }

// NewKey generates a backup key.
func NewKey() (*Key, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, fmt.Errorf("generate backup key: %w", err)
	}
	return &Key{id}, nil
}

// ParseKey reads a key from its text form (AGE-SECRET-KEY-1...).
func ParseKey(s string) (*Key, error) {
	id, err := age.ParseX25519Identity(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("parse backup key: %w", err)
	}
	return &Key{id}, nil
}

// String is the key's secret text form; handle like any secret.
func (k *Key) String() string { return k.id.String() }

// Encrypt returns a writer that encrypts to w; Close it to finish.
func (k *Key) Encrypt(w io.Writer) (io.WriteCloser, error) {
	return age.Encrypt(w, k.id.Recipient())
}

// ErrDecrypt means an object could not be decrypted or authenticated: the
// wrong key, or changed bytes.
var ErrDecrypt = errors.New("cannot decrypt")

// Decrypt returns a reader of r's plaintext. Reading returns an error as
// soon as a chunk fails authentication, so a changed byte is never passed on.
func (k *Key) Decrypt(r io.Reader) (io.Reader, error) {
	pr, err := age.Decrypt(r, k.id)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	return authReader{pr}, nil
}

type authReader struct{ r io.Reader }

func (a authReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %v", ErrDecrypt, err)
	}
	return n, err
}

// Sealer seals and opens the backup key with what the admin holds.
type Sealer struct {
	Passphrase string // BACKUP_PASSPHRASE
	Recipient  string // BACKUP_AGE_RECIPIENT (age1...), to seal
	Identity   string // BACKUP_AGE_IDENTITY (AGE-SECRET-KEY-1...), to open
	// WorkFactor is scrypt's log2 cost for a passphrase; 0 is age's default.
	WorkFactor int
}

// MinPassphrase is the shortest BACKUP_PASSPHRASE that seals: it guards
// every backup, in a bucket anyone may copy and attack offline.
const MinPassphrase = 12

// CheckSeal says what is wrong with the passphrase or recipient for
// sealing (a problem.List); nil when they can seal. It never repeats a
// secret.
func (s Sealer) CheckSeal() error {
	switch {
	case s.Recipient != "":
		if _, err := age.ParseX25519Recipient(s.Recipient); err != nil {
			return problem.List{{Var: "BACKUP_AGE_RECIPIENT", What: fmt.Sprintf("is not an age public key (%v)", err), Example: "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"}}
		}
	case s.Passphrase != "":
		if n := utf8.RuneCountInString(s.Passphrase); n < MinPassphrase {
			return problem.List{{Var: "BACKUP_PASSPHRASE", What: fmt.Sprintf("has %d characters; it guards every backup, so it needs at least %d", n, MinPassphrase), Example: `"four random words you keep elsewhere"`}}
		}
	}
	return nil
}

// Seal encrypts k for the target.
func (s Sealer) Seal(k *Key) ([]byte, error) {
	if err := s.CheckSeal(); err != nil {
		return nil, err
	}
	var r age.Recipient
	switch {
	case s.Recipient != "":
		r, _ = age.ParseX25519Recipient(s.Recipient)
	case s.Passphrase != "":
		sr, err := age.NewScryptRecipient(s.Passphrase)
		if err != nil {
			return nil, fmt.Errorf("BACKUP_PASSPHRASE: %w", err)
		}
		if s.WorkFactor > 0 {
			sr.SetWorkFactor(s.WorkFactor)
		}
		r = sr
	default:
		return nil, errors.New("set BACKUP_PASSPHRASE (or BACKUP_AGE_RECIPIENT) so that backups can be opened on new hardware")
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		return nil, fmt.Errorf("seal backup key: %w", err)
	}
	io.WriteString(w, k.String()+"\n")
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("seal backup key: %w", err)
	}
	return buf.Bytes(), nil
}

// Open decrypts a sealed backup key.
func (s Sealer) Open(sealed []byte) (*Key, error) {
	var id age.Identity
	what := ""
	switch {
	case s.Identity != "":
		i, err := age.ParseX25519Identity(strings.TrimSpace(s.Identity))
		if err != nil {
			return nil, fmt.Errorf("BACKUP_AGE_IDENTITY is not an age secret key (AGE-SECRET-KEY-1...): %w", err)
		}
		id, what = i, "BACKUP_AGE_IDENTITY"
	case s.Passphrase != "":
		i, err := age.NewScryptIdentity(s.Passphrase)
		if err != nil {
			return nil, fmt.Errorf("BACKUP_PASSPHRASE: %w", err)
		}
		// Seal uses age's default (18, 256 MiB); 20 (1 GiB) is as far as a
		// 2 GB device can follow.
		i.SetMaxWorkFactor(20)
		id, what = i, "BACKUP_PASSPHRASE"
	default:
		return nil, errors.New("set BACKUP_PASSPHRASE (or BACKUP_AGE_IDENTITY) to the one the backups were made with")
	}
	r, err := age.Decrypt(bytes.NewReader(sealed), id)
	if err != nil {
		return nil, fmt.Errorf("%s does not open this target's backup key (%v): it is not the one the backups were made with", what, err)
	}
	b, err := io.ReadAll(io.LimitReader(r, 4096))
	if err != nil {
		return nil, fmt.Errorf("open backup key: %w", err)
	}
	return ParseKey(string(b))
}
