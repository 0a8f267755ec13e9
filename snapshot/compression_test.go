package snapshot

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestCompressionFromEnv_NamesTheLevelsAndRefusesOthers(t *testing.T) {
	for v, want := range map[string]zstd.EncoderLevel{
		"": zstd.SpeedDefault, "fast": zstd.SpeedFastest, "default": zstd.SpeedDefault, "small": zstd.SpeedBetterCompression,
	} {
		got, err := CompressionFromEnv(func(string) string { return v })
		if err != nil || got != want {
			t.Errorf("BACKUP_COMPRESSION=%q: %v, %v; want %v", v, got, err, want)
		}
	}
	for _, v := range []string{"Fast", "fastest", "9"} {
		_, err := CompressionFromEnv(func(string) string { return v })
		if err == nil || !strings.Contains(err.Error(), "BACKUP_COMPRESSION: is \""+v+"\"") || !strings.Contains(err.Error(), "example: BACKUP_COMPRESSION=fast") {
			t.Errorf("BACKUP_COMPRESSION=%q: error %v; want the variable, the value and an example", v, err)
		}
	}
}

func TestEveryCompressionSettingHasALevelForPgDumpsOwnZstd(t *testing.T) {
	for name, level := range compressionLevels {
		if n, ok := archiveLevels[level]; !ok || n < 1 || n > 19 {
			t.Errorf("BACKUP_COMPRESSION=%s: pg_dump's zstd level %d, %v", name, n, ok)
		}
	}
}

// A dump of either layout reads back as the archive pg_dump wrote; what is
// neither fails.
func TestOpenDumpReadsBothLayoutsAsTheArchive(t *testing.T) {
	archive, err := os.ReadFile("../pgarchive/testdata/pipe17-zstd.dump")
	if err != nil {
		t.Fatal(err)
	}
	uncompressed, err := os.ReadFile("../pgarchive/testdata/pipe15-z0.dump")
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ stored, want []byte }{
		"an archive pg_dump compressed": {archive, archive},
		"zstd frames":                   {frames(t, uncompressed, 1000), uncompressed},
	} {
		dump, err := OpenDump(bytes.NewReader(c.stored), 1)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := io.ReadAll(dump)
		dump.Close()
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("%s: %d bytes, %v; want the %d of the archive", name, len(got), err, len(c.want))
		}
	}
	dump, err := OpenDump(bytes.NewReader([]byte("PGDUMP? no, garbage")), 1)
	if err == nil {
		_, err = io.ReadAll(dump)
		dump.Close()
	}
	if err == nil {
		t.Error("garbage read as a dump")
	}
}
