package storage

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidKey is returned, wrapped, for a key or prefix no backend accepts.
var ErrInvalidKey = errors.New("invalid key")

// CheckKey reports whether key is a valid object key: '/'-separated
// segments, none of them empty, "." or "..", no leading '/', no NUL byte.
// Every backend applies the same rule, so a key that works on one target
// works on all of them.
func CheckKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	return checkPath(key, "key")
}

// CheckPrefix reports whether prefix is a valid List prefix: empty, or the
// start of a valid key ("backups/", "backups/2024-" are both valid).
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	// A trailing '/' only says "inside this directory".
	trimmed := strings.TrimSuffix(prefix, "/")
	if trimmed == "" {
		return fmt.Errorf("%w: prefix %q starts with '/'", ErrInvalidKey, prefix)
	}
	return checkPath(trimmed, "prefix")
}

func checkPath(p, what string) error {
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("%w: %s %q contains a NUL byte", ErrInvalidKey, what, p)
	}
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("%w: %s %q is absolute (starts with '/')", ErrInvalidKey, what, p)
	}
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w: %s %q has an empty segment", ErrInvalidKey, what, p)
		case ".", "..":
			return fmt.Errorf("%w: %s %q has a %q segment", ErrInvalidKey, what, p, seg)
		}
	}
	return nil
}

// JoinKey joins a store's prefix (possibly empty) and a key or list prefix.
func JoinKey(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "/" + key
}
