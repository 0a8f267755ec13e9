package snapshot

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// compressible is n bytes a dump could hold: repeated text with random
// bits in it.
func compressible(n int) []byte {
	b := make([]byte, 0, n)
	r := make([]byte, 8)
	for len(b) < n {
		rand.Read(r)
		b = append(b, "INSERT status 'a toot about nothing much' "...)
		b = append(b, r...)
	}
	return b[:n]
}

func frames(t *testing.T, in []byte, writeSize int) []byte {
	t.Helper()
	var out bytes.Buffer
	fw, err := newFrameWriter(&out, zstd.SpeedDefault)
	if err != nil {
		t.Fatal(err)
	}
	for p := in; len(p) > 0; {
		n := min(writeSize, len(p))
		if _, err := fw.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// Frames one after another are one zstd stream: the keeper's decoder
// reads it whole, byte for byte, whatever its length and however it was
// written.
func TestFramesAreOneStreamByteForByte(t *testing.T) {
	for _, n := range []int{0, 1, frameSize - 1, frameSize, frameSize + 1, 3*frameSize + 12345} {
		in := compressible(n)
		for _, ws := range []int{1 << 16, frameSize + 7} {
			out := frames(t, in, ws)
			zr, err := zstd.NewReader(bytes.NewReader(out))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(zr)
			zr.Close()
			if err != nil || !bytes.Equal(got, in) {
				t.Fatalf("%d bytes written %d at a time: read back %d bytes, %v", n, ws, len(got), err)
			}
		}
	}
}

// The zstd command line, which the README's decrypt-by-hand recipe uses,
// reads it too.
func TestFramesAreReadByTheZstdCommand(t *testing.T) {
	zstdCmd, err := exec.LookPath("zstd")
	if err != nil {
		if os.Getenv("MASTOKEEPER_TEST_REQUIRE_SERVICES") != "" {
			t.Fatal("no zstd command (scripts/install-test-deps installs it)")
		}
		t.Skip("no zstd command")
	}
	in := compressible(2*frameSize + 999)
	cmd := exec.Command(zstdCmd, "-d", "-c")
	cmd.Stdin = bytes.NewReader(frames(t, in, 1<<20))
	got, err := cmd.Output()
	if err != nil || !bytes.Equal(got, in) {
		t.Fatalf("zstd -d: %d bytes, %v", len(got), err)
	}
}

type failingWriter struct{ after int }

var errTarget = errors.New("the target went away")

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errTarget
	}
	f.after--
	return len(p), nil
}

// A target that fails stops the writing soon, with its error - so that
// pg_dump, writing into it, stops too - and nothing hangs.
func TestAFailingTargetStopsTheFrames(t *testing.T) {
	fw, err := newFrameWriter(&failingWriter{after: 1}, zstd.SpeedFastest)
	if err != nil {
		t.Fatal(err)
	}
	in := compressible(frameSize)
	var werr error
	for i := 0; i < 20 && werr == nil; i++ {
		_, werr = fw.Write(in)
	}
	if !errors.Is(werr, errTarget) {
		t.Errorf("Write after the failure: %v, want the target's error", werr)
	}
	if err := fw.Close(); !errors.Is(err, errTarget) {
		t.Errorf("Close: %v, want the target's error", err)
	}
}
