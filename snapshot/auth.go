package snapshot

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrUnauthentic means a manifest, owner or verification record does not
// carry this instance's authentication: another instance wrote it, or
// someone changed, forged or moved it.
var ErrUnauthentic = errors.New("not authenticated by this instance's backup key")

// envelope is how an authenticated record is stored: the record's exact
// bytes and their HMAC, which covers the key the record is stored under
// too, so a record copied to another place does not authenticate there.
type envelope struct {
	Format int    `json:"format"`
	Kind   string `json:"kind"`
	Body   string `json:"body"` // base64 of the record's JSON
	MAC    string `json:"hmac"` // hex HMAC-SHA256
}

// macKey derives the authentication key from the backup key: a separate
// key, so the HMAC never exposes anything about the one that decrypts.
func (k *Key) macKey() []byte {
	mk, err := hkdf.Key(sha256.New, []byte(k.String()), nil, "mastokeeper snapshot authentication v2", 32)
	if err != nil {
		panic(err) // only for lengths sha256 cannot give
	}
	return mk
}

func (k *Key) mac(kind, key string, body []byte) []byte {
	h := hmac.New(sha256.New, k.macKey())
	fmt.Fprintf(h, "%s\x00%s\x00", kind, key)
	h.Write(body)
	return h.Sum(nil)
}

// seal wraps v, to be stored under key, in an authenticated envelope.
func (k *Key) seal(kind, key string, v any) []byte {
	body := marshal(v)
	return marshal(envelope{Format: Format, Kind: kind, Body: base64.StdEncoding.EncodeToString(body), MAC: hex.EncodeToString(k.mac(kind, key, body))})
}

// errOldFormat means a record in format 1, without authentication.
var errOldFormat = errors.New("format 1 (made before backups were authenticated)")

// open reads an envelope stored under key, checks its HMAC and only then
// decodes the record into v. A format 1 record (no envelope) gives
// errOldFormat and the raw bytes, for the caller to decide.
func (k *Key) open(kind, key string, r io.Reader, max int64, v any) (raw []byte, err error) {
	raw, err = io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > max {
		return nil, fmt.Errorf("it is over %d bytes", max)
	}
	var probe struct {
		Format int     `json:"format"`
		Kind   *string `json:"kind"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("it is not JSON: %v", err)
	}
	if probe.Kind == nil {
		if probe.Format <= formatOld {
			return raw, errOldFormat
		}
		return nil, fmt.Errorf("it is in format %d without authentication", probe.Format)
	}
	var e envelope
	if err := json.Unmarshal(raw, &e); err != nil {
		return nil, fmt.Errorf("it is not JSON: %v", err)
	}
	if e.Format > Format {
		return nil, fmt.Errorf("it is in format %d, newer than this mastokeeper reads (%d): update mastokeeper", e.Format, Format)
	}
	body, err := base64.StdEncoding.DecodeString(e.Body)
	mac, merr := hex.DecodeString(e.MAC)
	if err != nil || merr != nil || e.Kind != kind || !hmac.Equal(mac, k.mac(kind, key, body)) {
		return nil, ErrUnauthentic
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return nil, fmt.Errorf("authenticated, but unreadable: %v", err)
	}
	return nil, nil
}
