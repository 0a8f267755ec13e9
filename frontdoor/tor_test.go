package frontdoor

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
)

// A key and address tor 0.4.9 made.
const (
	torPublicKey = "f96fb372c5d6638a910424f7794d8c926b4bd3746f9ca6f0f9e0025bcc1b0f6b"
	torAddress   = "7fx3g4wf2zryveieet3xstmmsjvuxu3un6okn4hz4abfxta3b5vyqrqd.onion"
)

func TestTheOnionAddressIsThePublicKeys(t *testing.T) {
	pub, _ := hex.DecodeString(torPublicKey)
	if got := OnionAddress(pub); got != torAddress {
		t.Errorf("OnionAddress = %s, want tor's %s", got, torAddress)
	}
	if !IsOnionHost(torAddress) || IsOnionHost("example.onion") || IsOnionHost(strings.ToUpper(torAddress)) {
		t.Error("IsOnionHost accepts only v3 addresses")
	}
}

// newKey is a key as tor writes it (the secret's bytes are random: only
// their form is checked).
func newKey(t *testing.T) *instance.OnionKey {
	t.Helper()
	pub := make([]byte, 32)
	sec := make([]byte, 64)
	rand.Read(pub)
	rand.Read(sec)
	return &instance.OnionKey{Hostname: OnionAddress(pub), PublicKey: append([]byte(publicKeyHeader), pub...), SecretKey: append([]byte(secretKeyHeader), sec...)}
}

func TestAWrittenKeyReadsBackAsTorWantsIt(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t)
	if err := WriteOnionKey(dir, k); err != nil {
		t.Fatal(err)
	}
	got, err := ReadOnionKey(dir)
	if err != nil || got.Hostname != k.Hostname || string(got.SecretKey) != string(k.SecretKey) || string(got.PublicKey) != string(k.PublicKey) {
		t.Fatalf("read back %+v, %v", got, err)
	}
	// tor refuses a service directory or key others may read.
	if fi, _ := os.Stat(filepath.Join(dir, OnionServiceDir)); fi.Mode().Perm() != 0o700 {
		t.Errorf("service directory mode %v, want 0700", fi.Mode().Perm())
	}
	for _, f := range OnionServiceFiles {
		if fi, _ := os.Stat(filepath.Join(dir, OnionServiceDir, f)); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	// Another key replaces it whole, and says so to tor's launcher.
	put := KeyPut(dir)
	k2 := newKey(t)
	if err := WriteOnionKey(dir, k2); err != nil {
		t.Fatal(err)
	}
	if put == "" || KeyPut(dir) == put {
		t.Errorf("KeyPutFile %q, then %q: each key put must change it", put, KeyPut(dir))
	}
	if got, _ := ReadOnionKey(dir); got == nil || got.Hostname != k2.Hostname {
		t.Errorf("the second key did not replace the first: %+v", got)
	}
}

// A record's key comes back from a backup target: one that tor could not
// use, or whose address is not its own, never reaches tor's directory.
func TestAKeyThatIsNotTorsIsRefusedBeforeAnythingIsWritten(t *testing.T) {
	for name, spoil := range map[string]func(k *instance.OnionKey){
		"another address":     func(k *instance.OnionKey) { k.Hostname = torAddress },
		"a short secret key":  func(k *instance.OnionKey) { k.SecretKey = k.SecretKey[:40] },
		"no public header":    func(k *instance.OnionKey) { k.PublicKey = append([]byte("x"), k.PublicKey[1:]...) },
		"an empty public key": func(k *instance.OnionKey) { k.PublicKey = nil },
	} {
		dir := t.TempDir()
		k := newKey(t)
		spoil(k)
		if err := WriteOnionKey(dir, k); err == nil {
			t.Errorf("%s: written", name)
		}
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			t.Errorf("%s: something was written", name)
		}
	}
}

func TestReadingBeforeTorMadeAKeySaysNotExist(t *testing.T) {
	if _, err := ReadOnionKey(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want a not-exist error", err)
	}
}

func TestTorrcServesOnlyTheOnionOnPort80(t *testing.T) {
	rc := Torrc("/var/lib/tor", "172.18.0.5:80")
	for _, want := range []string{"DataDirectory /var/lib/tor\n", "SocksPort 0\n", "HiddenServiceDir /var/lib/tor/onion_service\n",
		"HiddenServiceVersion 3\n", "HiddenServicePort 80 172.18.0.5:80\n"} {
		if !strings.Contains(rc, want) {
			t.Errorf("torrc lacks %q:\n%s", want, rc)
		}
	}
}
