package pgarchive

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// writerAt patches a copy of an archive in memory.
type writerAt []byte

func (w writerAt) WriteAt(p []byte, off int64) (int, error) { return copy(w[off:], p), nil }

var fixtures = []string{"15-z0", "15-z6", "17-none", "17-zstd"}

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPatchedPipeDumpIsWhatPgDumpWritesToAFile(t *testing.T) {
	for _, v := range fixtures {
		t.Run(v, func(t *testing.T) {
			pipe, file := read(t, "pipe"+v+".dump"), read(t, "file"+v+".dump")
			if bytes.Equal(pipe, file) {
				t.Fatal("the fixtures do not differ: pg_dump wrote offsets to the pipe?")
			}
			ix, err := Read(bytes.NewReader(pipe))
			if err != nil {
				t.Fatal(err)
			}
			if ix.Size != int64(len(pipe)) {
				t.Errorf("Size %d, the archive has %d bytes", ix.Size, len(pipe))
			}
			patched := append(writerAt(nil), pipe...)
			if err := ix.Patch(patched); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(patched, file) {
				t.Fatal("the patched archive differs from the one pg_dump wrote to a file")
			}
		})
	}
}

func TestIndexNamesEveryDataBlock(t *testing.T) {
	for _, v := range fixtures {
		t.Run(v, func(t *testing.T) {
			ix, err := Read(bytes.NewReader(read(t, "pipe"+v+".dump")))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			var sum int64
			for _, e := range ix.Entries {
				if e.HasData != (e.DataOffset >= 0) {
					t.Errorf("%s %s: has data %v, offset %d", e.Desc, e.Tag, e.HasData, e.DataOffset)
				}
				if e.DataOffset >= 0 {
					got[e.Desc+" "+e.Tag] = true
					sum += e.DataSize
				}
			}
			for _, want := range []string{"TABLE DATA accounts", "TABLE DATA statuses", "TABLE DATA empty_table"} {
				if !got[want] {
					t.Errorf("no data block for %s; found %v", want, got)
				}
			}
			if sum != ix.DataBytes() || sum <= 0 || sum >= ix.Size {
				t.Errorf("data bytes %d (sum %d) of %d", ix.DataBytes(), sum, ix.Size)
			}
			idx, _ := ix.Entry(ix.Entries[0].DumpID)
			if idx.DumpID != ix.Entries[0].DumpID {
				t.Error("Entry does not find an entry by its dump ID")
			}
			var index *Entry
			for i, e := range ix.Entries {
				if e.Desc == "INDEX" && e.Tag == "statuses_account" {
					index = &ix.Entries[i]
				}
			}
			if index == nil || index.Section != SectionPostData || len(index.Deps) == 0 {
				t.Fatalf("the index entry: %+v", index)
			}
		})
	}
}

func TestDamagedArchivesAreRefusedNotMisread(t *testing.T) {
	pipe := read(t, "pipe17-none.dump")
	ix, err := Read(bytes.NewReader(pipe))
	if err != nil {
		t.Fatal(err)
	}
	lastBlock := int64(0)
	for _, e := range ix.Entries {
		lastBlock = max(lastBlock, e.DataOffset)
	}
	flip := func(at int64, b byte) []byte {
		c := bytes.Clone(pipe)
		c[at] = b
		return c
	}
	for name, b := range map[string][]byte{
		"cut in a table's data":        pipe[:len(pipe)-40],
		"cut in the table of contents": pipe[:200],
		"no magic":                     flip(0, 'X'),
		"another format (tar)":         flip(10, 3),
		"an unknown block type":        flip(lastBlock, 9),
		"garbage after the last block": append(bytes.Clone(pipe), 1, 0, 1, 0, 0, 0),
		"empty":                        nil,
	} {
		if _, err := Read(bytes.NewReader(b)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := Read(bytes.NewReader(flip(6, 17))); !errors.Is(err, ErrUnsupported) {
		t.Errorf("archive version 1.17: %v, want ErrUnsupported", err)
	}
}

// pgRestoreSQL is the SQL pg_restore makes of an archive: what a restore
// would execute, rows included.
func pgRestoreSQL(t *testing.T, archive []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "archive")
	if err := os.WriteFile(f, archive, 0o600); err != nil {
		t.Fatal(err)
	}
	var tried []string
	for _, bin := range []string{"pg_restore", "../.cache/pg17client/bin/pg_restore"} {
		out, err := exec.Command(bin, "--restrict-key", "pgarchivetest", "--file", "-", f).CombinedOutput()
		if err == nil {
			return string(out)
		}
		tried = append(tried, fmt.Sprintf("%s: %v: %s", bin, err, out))
	}
	t.Fatalf("no pg_restore here reads the archive (scripts/install-test-deps installs PostgreSQL 15's and 17's):\n%s", strings.Join(tried, "\n"))
	return ""
}

func TestRechunkedArchivesRestoreTheSameRows(t *testing.T) {
	for _, v := range fixtures {
		t.Run(v, func(t *testing.T) {
			pipe := read(t, "pipe"+v+".dump")
			var out bytes.Buffer
			n, err := Rechunk(&out, bytes.NewReader(pipe), 4096)
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(out.Len()) {
				t.Errorf("Rechunk says %d bytes, wrote %d", n, out.Len())
			}
			if strings.HasSuffix(v, "z0") || strings.HasSuffix(v, "none") {
				// Uncompressed: a chunk per row before, 4 KiB chunks after.
				if out.Len() >= len(pipe) {
					t.Errorf("rechunked %d bytes, from %d", out.Len(), len(pipe))
				}
			}
			ix, err := Read(bytes.NewReader(out.Bytes()))
			if err != nil {
				t.Fatalf("the rechunked archive does not read: %v", err)
			}
			if e := ix.Entries; len(e) == 0 {
				t.Fatal("no entries")
			}
			if got, want := pgRestoreSQL(t, out.Bytes()), pgRestoreSQL(t, pipe); got != want {
				t.Errorf("pg_restore makes other SQL of the rechunked archive (%d bytes, the original %d)", len(got), len(want))
			}
		})
	}
}

func TestRechunkCopiesAnArchiveOfAnUnknownVersionUnchanged(t *testing.T) {
	pipe := bytes.Clone(read(t, "pipe17-none.dump"))
	pipe[6] = 17
	var out bytes.Buffer
	if _, err := Rechunk(&out, bytes.NewReader(pipe), 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), pipe) {
		t.Error("an archive of version 1.17 was changed")
	}
}

type failingWriter struct{ after int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.after -= len(p); f.after < 0 {
		return 0, errors.New("target gone")
	}
	return len(p), nil
}

func TestRechunkStopsWhenTheWriterFails(t *testing.T) {
	if _, err := Rechunk(&failingWriter{after: 1000}, bytes.NewReader(read(t, "pipe15-z0.dump")), 512); err == nil || !strings.Contains(err.Error(), "target gone") {
		t.Errorf("got %v", err)
	}
}
