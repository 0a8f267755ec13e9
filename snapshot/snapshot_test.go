package snapshot

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestIDsSortByTimeToTheMillisecondAndParseBack(t *testing.T) {
	a := NewID(time.Date(2026, 11, 28, 3, 15, 0, 0, time.UTC))
	b := NewID(time.Date(2026, 11, 28, 3, 15, 1, 0, time.FixedZone("x", 3600)))
	c := NewID(time.Date(2026, 11, 28, 3, 15, 0, 1e6, time.UTC))
	if a != "20261128T031500.000Z" || !(b < a) || !(a < c) {
		t.Errorf("ids %s %s %s", a, b, c)
	}
	for _, id := range []string{a, "20261128T031500Z"} { // the first releases' IDs stay valid
		if at, err := IDTime(id); err != nil || !at.Equal(time.Date(2026, 11, 28, 3, 15, 0, 0, time.UTC)) {
			t.Errorf("IDTime(%s) = %v, %v", id, at, err)
		}
	}
	if id, ok := ParseManifestKey(ManifestKey(a)); !ok || id != a {
		t.Errorf("ParseManifestKey(%s) = %s, %v", ManifestKey(a), id, ok)
	}
	for _, k := range []string{ObjectKey(a, DBDump), "snapshots/x/manifest.json", "manifest.json", OwnerKey} {
		if _, ok := ParseManifestKey(k); ok {
			t.Errorf("%s taken for a manifest", k)
		}
	}
	if err := CheckID("latest"); err == nil || !strings.Contains(err.Error(), "20261128T031500.000Z") {
		t.Errorf("CheckID(latest) = %v; want an error with an example", err)
	}
}

func TestEncryptedObjectsRoundTripAndRefuseChanges(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, _ := k.Encrypt(&buf)
	io.WriteString(w, strings.Repeat("mastodon ", 10000))
	w.Close()
	r, err := k.Decrypt(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(r); err != nil || string(b) != strings.Repeat("mastodon ", 10000) {
		t.Fatalf("round trip: %v", err)
	}
	changed := bytes.Clone(buf.Bytes())
	changed[len(changed)-10] ^= 1
	r, err = k.Decrypt(bytes.NewReader(changed))
	if err == nil {
		_, err = io.ReadAll(r)
	}
	if !errors.Is(err, ErrDecrypt) {
		t.Errorf("a changed byte gave %v; want ErrDecrypt", err)
	}
	other, _ := NewKey()
	if _, err := other.Decrypt(bytes.NewReader(buf.Bytes())); !errors.Is(err, ErrDecrypt) {
		t.Errorf("another key gave %v; want ErrDecrypt", err)
	}
}

func TestTheBackupKeyOpensOnlyWithWhatSealedIt(t *testing.T) {
	k, _ := NewKey()
	sealed, err := Sealer{Passphrase: "correct horse", WorkFactor: 10}.Seal(k)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Sealer{Passphrase: "correct horse"}.Open(sealed)
	if err != nil || got.String() != k.String() {
		t.Fatalf("open: %v", err)
	}
	_, err = Sealer{Passphrase: "wrong horse"}.Open(sealed)
	if err == nil || !strings.Contains(err.Error(), "BACKUP_PASSPHRASE does not open") {
		t.Errorf("wrong passphrase: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "wrong horse") {
		t.Error("the error repeats the passphrase")
	}
	if _, err := (Sealer{}).Seal(k); err == nil || !strings.Contains(err.Error(), "BACKUP_PASSPHRASE") {
		t.Errorf("no passphrase: %v", err)
	}

	// An admin's own age key instead of a passphrase.
	admin, _ := NewKey()
	recipient := admin.id.Recipient().String()
	sealed, err = Sealer{Recipient: recipient}.Seal(k)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := (Sealer{Identity: admin.String()}).Open(sealed); err != nil || got.String() != k.String() {
		t.Errorf("open with the admin's identity: %v", err)
	}
	if _, err := (Sealer{Identity: k.String()}).Open(sealed); err == nil || !strings.Contains(err.Error(), "BACKUP_AGE_IDENTITY does not open") {
		t.Errorf("a wrong identity: %v", err)
	}
}

func TestASealNeedsALongEnoughPassphraseOrARealRecipient(t *testing.T) {
	k, _ := NewKey()
	for _, s := range []Sealer{{Passphrase: "hunter2"}, {Recipient: "age1notakey"}} {
		_, err := s.Seal(k)
		if err == nil {
			t.Errorf("%+v sealed", s)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "example: BACKUP_") {
			t.Errorf("error %q: want the variable, an example, and never the secret", err)
		}
	}
	// Opening is never refused for length: the passphrase is what it was.
	if err := (Sealer{Passphrase: "twelve chars"}).CheckSeal(); err != nil {
		t.Errorf("a 12-character passphrase: %v", err)
	}
}
