package bytesize_test

import (
	"strings"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/bytesize"
)

func TestPostgresAndIECUnitsMeanTheSameSize(t *testing.T) {
	for in, want := range map[string]int64{
		"16777216": 16 << 20, "512b": 512,
		"256MB": 256 << 20, "256MiB": 256 << 20, "256M": 256 << 20, "256mb": 256 << 20, "256 MiB": 256 << 20,
		"64kB": 64 << 10, "64KiB": 64 << 10, "64k": 64 << 10,
		"2GB": 2 << 30, "2GiB": 2 << 30, "1.5GiB": 3 << 29, "1TB": 1 << 40,
		" 32MB ": 32 << 20,
	} {
		got, err := bytesize.Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestABadSizeSaysWhatASizeLooksLike(t *testing.T) {
	for _, in := range []string{"", "lots", "MB", "12 parsecs", "1e3", "1.2.3MB", "99999999999TB", "NaN"} {
		_, err := bytesize.Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) accepted", in)
			continue
		}
		if !strings.Contains(err.Error(), "kB, MB, GB") && !strings.Contains(err.Error(), "too large") {
			t.Errorf("Parse(%q): %q does not say what a size looks like", in, err)
		}
	}
}

func TestFormatReadsBack(t *testing.T) {
	for n, want := range map[int64]string{16 << 20: "16MiB", 3 << 29: "1536MiB", 1 << 40: "1TiB", 1000: "1000", 5 << 10: "5KiB"} {
		if got := bytesize.Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
		if back, err := bytesize.Parse(bytesize.Format(n)); err != nil || back != n {
			t.Errorf("Parse(Format(%d)) = %d, %v", n, back, err)
		}
	}
}

func TestPostgresGetsItsOwnUnits(t *testing.T) {
	for n, want := range map[int64]string{256 << 20: "256MB", 2 << 30: "2GB", 64 << 10: "64kB", 3 << 29: "1536MB", 1000: "1kB", 1 << 40: "1TB"} {
		if got := bytesize.Postgres(n); got != want {
			t.Errorf("Postgres(%d) = %q, want %q", n, got, want)
		}
	}
}
