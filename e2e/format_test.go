package e2e

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The backup format as README.md documents it, written here independently
// of the product's code: an authenticated record is stored as
//
//	{"format":2,"kind":KIND,"body":BASE64(JSON),"hmac":HEX}
//
// with HMAC-SHA256 over KIND, NUL, the object's key, NUL, the body's bytes,
// keyed by HKDF-SHA256(the backup key's text, no salt,
// "mastokeeper snapshot authentication v2", 32 bytes). Tests use it to
// read manifests, and - as an attacker who stole the backup key would - to
// forge them.

type envelope struct {
	Format int    `json:"format"`
	Kind   string `json:"kind"`
	Body   string `json:"body"`
	MAC    string `json:"hmac"`
}

// manifest returns the body of backup id's manifest, without checking it.
func (d *backupDevice) manifest(t *testing.T, id string) map[string]any {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(d.read(t, "snapshots/"+id+"/manifest.json"), &e); err != nil || e.Kind != "manifest" {
		t.Fatalf("manifest of %s is not an authenticated envelope: %v", id, err)
	}
	body, err := base64.StdEncoding.DecodeString(e.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// backupKey is the device's backup key, as its state directory holds it.
func (d *backupDevice) backupKey(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.stateDir, "backup-key"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// sealRecord renders body as an authenticated record stored under key.
func sealRecord(t *testing.T, backupKey, kind, key string, body []byte) []byte {
	t.Helper()
	mk, err := hkdf.Key(sha256.New, []byte(backupKey), nil, "mastokeeper snapshot authentication v2", 32)
	if err != nil {
		t.Fatal(err)
	}
	h := hmac.New(sha256.New, mk)
	h.Write([]byte(kind + "\x00" + key + "\x00"))
	h.Write(body)
	b, _ := json.Marshal(envelope{Format: 2, Kind: kind, Body: base64.StdEncoding.EncodeToString(body), MAC: hex.EncodeToString(h.Sum(nil))})
	return b
}

// putManifest stores m as backup id's manifest, authenticated with the
// device's own backup key when signed, else as a bucket writer without
// the key would: in the old, unauthenticated format.
func (d *backupDevice) putManifest(t *testing.T, id string, m map[string]any, signed bool) {
	t.Helper()
	key := "snapshots/" + id + "/manifest.json"
	var b []byte
	if signed {
		body, _ := json.Marshal(m)
		b = sealRecord(t, d.backupKey(t), "manifest", key, body)
	} else {
		m["format"] = 1
		b, _ = json.Marshal(m)
	}
	if err := d.store(t).Put(context.Background(), key, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
}

func TestTheManifestIsAnAuthenticatedEnvelopeAsDocumented(t *testing.T) {
	t.Parallel()
	d := newBackupDevice(t, backupTarget{"file", fileTarget})
	id := d.backup(t)
	key := "snapshots/" + id + "/manifest.json"
	var e envelope
	if err := json.Unmarshal(d.read(t, key), &e); err != nil {
		t.Fatal(err)
	}
	body, _ := base64.StdEncoding.DecodeString(e.Body)
	var want envelope
	json.Unmarshal(sealRecord(t, d.backupKey(t), "manifest", key, body), &want)
	if e.Format != 2 || e.Kind != "manifest" || e.MAC != want.MAC {
		t.Errorf("stored envelope %+v; want format 2, kind manifest and the documented HMAC %s", e, want.MAC)
	}
	m := d.manifest(t, id)
	if m["id"] != id || m["instance_id"] == "" || m["instance_id"] != d.record().InstanceID {
		t.Errorf("manifest body %v; want its ID and the record's instance ID %q", m, d.record().InstanceID)
	}
}
