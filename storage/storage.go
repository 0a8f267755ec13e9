// Package storage is where backups go: one small interface, one
// implementation per kind of target, chosen by the scheme of one URL
// (file://, s3://, swift://).
package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// ErrNotFound is returned, wrapped, by Get when the object does not exist.
var ErrNotFound = errors.New("object not found")

// Object describes a stored object.
type Object struct {
	Key     string // relative to the store's prefix, '/'-separated
	Size    int64
	ModTime time.Time
}

// Store is a place for objects under one prefix. Keys are relative to it.
type Store interface {
	// Put stores everything read from r under key, streaming: memory use is
	// bounded by the backend's part size, not by the object's size. The
	// object becomes visible only once complete; an error or a crash
	// midway leaves no object under key (a stale multipart upload or
	// segment at most, which the backend's own clean-up removes).
	Put(ctx context.Context, key string, r io.Reader) error
	// Get opens key for reading; a missing key gives an ErrNotFound error.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// List returns every object whose key starts with prefix, sorted by key.
	List(ctx context.Context, prefix string) ([]Object, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// String describes the target for logs, with no credential in it.
	String() string
}
