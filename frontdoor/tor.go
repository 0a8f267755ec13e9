package frontdoor

import (
	"crypto/sha3"
	"encoding/base32"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
)

// The Tor onion service. tor keeps its state in the `tor` volume; the
// service's directory there holds its key, and losing that key changes the
// address, so backups carry it.
const (
	// DefaultTorDir is where the `tor` volume is mounted, in the tor
	// service and the keeper alike.
	DefaultTorDir = "/var/lib/tor"
	TorDirVar     = "TOR_DATA_DIR"
	// DefaultTorUpstream is where tor sends the onion's visitors: the
	// proxy's plain-HTTP port, which serves *.onion hosts as plain HTTP.
	DefaultTorUpstream = "proxy:80"
	TorUpstreamVar     = "TOR_UPSTREAM"
	// OnionServiceDir is the onion service's directory within the data
	// directory: hostname, hs_ed25519_secret_key, hs_ed25519_public_key.
	OnionServiceDir = "onion_service"
)

// KeyPutFile is where WriteOnionKey notes, last, that it put a key into
// tor's data directory: tor reads its key only when it starts, so the tor
// service restarts when this file changes under it.
const KeyPutFile = "keeper-put-key"

// OnionServiceFiles are the files that make the onion address: restoring
// them restores the address.
var OnionServiceFiles = []string{"hostname", "hs_ed25519_public_key", "hs_ed25519_secret_key"}

// TorDir is the tor data directory getenv names, or the default.
func TorDir(getenv func(string) string) string {
	if d := getenv(TorDirVar); d != "" {
		return d
	}
	return DefaultTorDir
}

// Torrc is tor's configuration for the onion service: serving only (no
// SOCKS port for clients), logging to stdout for the dashboard, sending
// visitors to upstream (an address:port; tor resolves a name only once).
func Torrc(dataDir, upstream string) string {
	return strings.Join([]string{
		"DataDirectory " + dataDir,
		"SocksPort 0",
		"Log notice stdout",
		"HiddenServiceDir " + filepath.Join(dataDir, OnionServiceDir),
		"HiddenServiceVersion 3",
		// Mastodon skips its HTTPS redirect for a Host ending in .onion,
		// so the onion is served on port 80, never with a port in it.
		"HiddenServicePort 80 " + upstream,
		"",
	}, "\n")
}

var onionRe = regexp.MustCompile(`^[a-z2-7]{56}\.onion$`)

// IsOnionHost says whether h is a v3 onion address.
func IsOnionHost(h string) bool { return onionRe.MatchString(h) }

// The headers tor writes before its v3 keys.
const (
	publicKeyHeader = "== ed25519v1-public: type0 ==\x00\x00\x00"
	secretKeyHeader = "== ed25519v1-secret: type0 ==\x00\x00\x00"
)

// OnionAddress is the v3 onion address of an ed25519 public key (tor's
// rend-spec-v3: base32 of key, checksum and version).
func OnionAddress(pub []byte) string {
	h := sha3.New256()
	h.Write([]byte(".onion checksum"))
	h.Write(pub)
	h.Write([]byte{3})
	sum := h.Sum(nil)
	raw := append(append(append([]byte{}, pub...), sum[:2]...), 3)
	return strings.ToLower(base32.StdEncoding.EncodeToString(raw)) + ".onion"
}

// checkOnionKey says what is wrong with k, or nil: each file as tor writes
// it, and the address the public key's own.
func checkOnionKey(k *instance.OnionKey) error {
	switch {
	case len(k.PublicKey) != len(publicKeyHeader)+32 || string(k.PublicKey[:len(publicKeyHeader)]) != publicKeyHeader:
		return errors.New("the public key is not a tor v3 key file")
	case len(k.SecretKey) != len(secretKeyHeader)+64 || string(k.SecretKey[:len(secretKeyHeader)]) != secretKeyHeader:
		return errors.New("the secret key is not a tor v3 key file")
	case OnionAddress(k.PublicKey[len(publicKeyHeader):]) != k.Hostname:
		return fmt.Errorf("the address %q is not the public key's", k.Hostname)
	}
	return nil
}

// ReadOnionKey reads the onion service's key files from tor's data
// directory. Before tor made them, the error is an fs.ErrNotExist.
func ReadOnionKey(dataDir string) (*instance.OnionKey, error) {
	dir := filepath.Join(dataDir, OnionServiceDir)
	var files [3][]byte
	for i, name := range OnionServiceFiles {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("tor: read the onion service's key: %w", err)
		}
		files[i] = b
	}
	k := &instance.OnionKey{Hostname: strings.TrimSpace(string(files[0])), PublicKey: files[1], SecretKey: files[2]}
	if err := checkOnionKey(k); err != nil {
		return nil, fmt.Errorf("tor: the onion service's key in %s: %w", dir, err)
	}
	return k, nil
}

// WriteOnionKey puts k into tor's data directory, replacing the key there:
// tor serves k's address from its next start. Each file is written whole
// or not at all; a key tor could not use is refused.
func WriteOnionKey(dataDir string, k *instance.OnionKey) error {
	if err := checkOnionKey(k); err != nil {
		return fmt.Errorf("tor: refusing the onion key: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("tor: %w", err)
	}
	root, err := os.OpenRoot(dataDir)
	if err != nil {
		return fmt.Errorf("tor: %w", err)
	}
	defer root.Close()
	// tor refuses a service directory that others may read.
	if err := root.Mkdir(OnionServiceDir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("tor: %w", err)
	}
	if err := root.Chmod(OnionServiceDir, 0o700); err != nil {
		return fmt.Errorf("tor: %w", err)
	}
	for i, data := range [][]byte{[]byte(k.Hostname + "\n"), k.PublicKey, k.SecretKey} {
		if err := instance.WriteFileAtomic(filepath.Join(dataDir, OnionServiceDir, OnionServiceFiles[i]), data, 0o600); err != nil {
			return fmt.Errorf("tor: write the onion service's key: %w", err)
		}
	}
	note := fmt.Sprintf("%s %d\n", k.Hostname, time.Now().UnixNano())
	if err := instance.WriteFileAtomic(filepath.Join(dataDir, KeyPutFile), []byte(note), 0o600); err != nil {
		return fmt.Errorf("tor: %w", err)
	}
	return nil
}

// KeyPut is what KeyPutFile says now ("" before any key was put).
func KeyPut(dataDir string) string {
	b, _ := os.ReadFile(filepath.Join(dataDir, KeyPutFile))
	return string(b)
}
