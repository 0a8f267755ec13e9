package snapshot

import (
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
