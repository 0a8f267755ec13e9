package snapshot

// Where a backup's time goes: each stage of the dump's way to the target,
// alone and together, in MB/s of uncompressed dump.
//
//	go test ./snapshot -run '^$' -bench Stages -benchtime 3x
//	MASTOKEEPER_BENCH_DUMP=/path/to/pg_dump-Fc-Z0.dump go test ./snapshot -run '^$' -bench Stages -cpuprofile cpu.out
//
// Without MASTOKEEPER_BENCH_DUMP the input is 64 MiB of synthetic,
// dump-like text; a real `pg_dump -Fc -Z0` file gives the real ratios.

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

func benchInput(b *testing.B) []byte {
	b.Helper()
	if p := os.Getenv("MASTOKEEPER_BENCH_DUMP"); p != "" {
		data, err := os.ReadFile(p)
		if err != nil {
			b.Fatal(err)
		}
		return data
	}
	return compressible(64 << 20)
}

func BenchmarkStages(b *testing.B) {
	data := benchInput(b)
	id, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	run := func(name string, f func(b *testing.B) int) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			out := 0
			for b.Loop() {
				out = f(b)
			}
			if out > 0 {
				b.ReportMetric(float64(out)/float64(len(data)), "ratio")
			}
		})
	}
	run("sha256", func(b *testing.B) int {
		h := sha256.New()
		h.Write(data)
		return 0
	})
	run("age", func(b *testing.B) int {
		w, _ := age.Encrypt(io.Discard, id.Recipient())
		w.Write(data)
		w.Close()
		return 0
	})
	var compressed bytes.Buffer
	for _, lv := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault} {
		run("zstd-stream-"+lv.String(), func(b *testing.B) int {
			compressed.Reset()
			zw, _ := zstd.NewWriter(&compressed, zstd.WithEncoderLevel(lv), zstd.WithEncoderConcurrency(2))
			zw.Write(data)
			zw.Close()
			return compressed.Len()
		})
		run("zstd-frames-"+lv.String(), func(b *testing.B) int {
			compressed.Reset()
			fw, _ := newFrameWriter(&compressed, lv)
			fw.Write(data)
			fw.Close()
			return compressed.Len()
		})
	}
	run("unzstd", func(b *testing.B) int {
		zr, _ := zstd.NewReader(bytes.NewReader(compressed.Bytes()))
		defer zr.Close()
		n, _ := io.Copy(io.Discard, zr)
		return int(n)
	})
	// The whole way, as dumpDatabase and upload do it: a child process's
	// output (cat standing in for pg_dump), frames, age, sha256, a pipe to
	// a file that is synced.
	src := filepath.Join(b.TempDir(), "dump")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		b.Fatal(err)
	}
	run("pipeline-default", func(b *testing.B) int {
		out, err := os.Create(filepath.Join(b.TempDir(), "out"))
		if err != nil {
			b.Fatal(err)
		}
		defer out.Close()
		pr, pw := io.Pipe()
		done := make(chan int64)
		go func() {
			n, _ := io.Copy(out, pr)
			out.Sync()
			done <- n
		}()
		hw := newHashingWriter(pw)
		ew, _ := age.Encrypt(hw, id.Recipient())
		fw, _ := newFrameWriter(ew, zstd.SpeedDefault)
		cmd := exec.Command("cat", src)
		cmd.Stdout = fw
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		fw.Close()
		ew.Close()
		pw.Close()
		return int(<-done)
	})
}
