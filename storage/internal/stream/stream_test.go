package stream

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

func TestReadUpTo(t *testing.T) {
	for _, tc := range []struct {
		n, limit int
		more     bool
	}{
		{0, 10, false}, {9, 10, false}, {10, 10, false}, {11, 10, true}, {1 << 20, 1<<20 - 1, true}, {200 << 10, 1 << 20, false},
	} {
		data := bytes.Repeat([]byte{7}, tc.n)
		buf, more, err := ReadUpTo(iotest.OneByteReader(bytes.NewReader(data)), tc.limit)
		if err != nil || more != tc.more {
			t.Fatalf("n=%d limit=%d: more=%v err=%v", tc.n, tc.limit, more, err)
		}
		if !more && len(buf) != tc.n {
			t.Fatalf("n=%d limit=%d: %d bytes", tc.n, tc.limit, len(buf))
		}
		if more && len(buf) != tc.limit+1 {
			t.Fatalf("n=%d limit=%d: %d bytes with more", tc.n, tc.limit, len(buf))
		}
	}
	if _, _, err := ReadUpTo(iotest.ErrReader(io.ErrClosedPipe), 10); err != io.ErrClosedPipe {
		t.Fatalf("err = %v", err)
	}
}
