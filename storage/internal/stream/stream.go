// Package stream holds the reading helpers the backends share.
package stream

import (
	"context"
	"errors"
	"io"
)

// Source wraps the reader given to Put: it stops once ctx is done and
// remembers the reader's own error, so a failing source is told apart from
// a failing destination.
type Source struct {
	ctx context.Context
	r   io.Reader
	err error // the source's own error (not io.EOF, not ctx's)
	n   int64
}

// NewSource wraps r.
func NewSource(ctx context.Context, r io.Reader) *Source {
	return &Source{ctx: ctx, r: r}
}

func (s *Source) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if err := s.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// Err is the source reader's own error, if it failed.
func (s *Source) Err() error { return s.err }

// N is the number of bytes read so far.
func (s *Source) N() int64 { return s.n }

// ReadUpTo reads r until EOF or until it has more than limit bytes. more
// is true when r holds more than limit bytes: buf then holds limit+1 of
// them, which come before the rest of r. The buffer grows as data arrives:
// a small object costs little memory.
func ReadUpTo(r io.Reader, limit int) (buf []byte, more bool, err error) {
	max := limit + 1 // one byte more tells "more follows" from "exactly limit"
	size := 64 << 10
	if size > max {
		size = max
	}
	buf = make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= max {
				return buf, true, nil
			}
			next := 2 * cap(buf)
			if next > max {
				next = max
			}
			nb := make([]byte, len(buf), next)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
}
