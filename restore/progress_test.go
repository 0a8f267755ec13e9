package restore

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/mastodon-on-balena/mastodon-balena/pgarchive"
)

func TestProgressDrawsABarOnATerminalAndEndsTheLine(t *testing.T) {
	var term, logs bytes.Buffer
	r := &Restore{Terminal: &term}
	p := r.progress(slog.New(slog.NewTextHandler(&logs, nil)), "database", 4<<20)
	for range 4 {
		p.Write(make([]byte, 1<<20))
	}
	out := term.String()
	if !strings.HasPrefix(out, "\rdatabase") || !strings.Contains(out, "100%") || !strings.HasSuffix(out, "4 MiB\n") {
		t.Errorf("terminal output %q", out)
	}
	if !strings.Contains(out, "[##############################]") {
		t.Errorf("no full bar in %q", out)
	}
}

func TestProgressWithoutATerminalOnlyLogs(t *testing.T) {
	var logs bytes.Buffer
	p := (&Restore{}).progress(slog.New(slog.NewTextHandler(&logs, nil)), "media", 10)
	p.last = p.last.Add(-20e9) // 20 s ago
	p.Write(make([]byte, 5))
	if !strings.Contains(logs.String(), `msg="downloading media"`) || !strings.Contains(logs.String(), "percent=50") {
		t.Errorf("log %q", logs.String())
	}
}

func TestRestoreProgressFollowsTheItemsPgRestoreFinishes(t *testing.T) {
	raw, err := os.ReadFile("../pgarchive/testdata/pipe17-none.dump")
	if err != nil {
		t.Fatal(err)
	}
	ix, err := pgarchive.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var term, logs bytes.Buffer
	bar := (&Restore{Terminal: &term}).progress(slog.New(slog.NewTextHandler(&logs, nil)), "database", 0)
	bar.bytes = false
	out := &restoreOutput{progress: newRestoreProgress(ix, bar)}
	var statuses, index int
	for _, e := range ix.Entries {
		switch e.Desc + " " + e.Tag {
		case "TABLE DATA statuses":
			statuses = e.DumpID
		case "INDEX statuses_account":
			index = e.DumpID
		}
	}
	fmt.Fprintf(out, "pg_restore: connecting to database for restore\npg_restore: launching item %d TABLE DATA public statuses\n", statuses)
	if bar.done != 0 {
		t.Errorf("a launched item counts %d", bar.done)
	}
	fmt.Fprintf(out, "pg_restore: finished item %d TABLE DATA public statuses\n", statuses)
	afterData := bar.done
	if afterData <= 0 || afterData >= bar.total {
		t.Errorf("after the statuses' data: %d of %d", afterData, bar.total)
	}
	fmt.Fprintf(out, "pg_restore: finished item %d INDEX public statuses_account\n", index)
	// The index is built from the statuses' rows: it weighs about as much.
	if got := bar.done - afterData; got < afterData/2 || got > afterData*2 {
		t.Errorf("the index on statuses weighs %d, its table's data %d", got, afterData)
	}
	out.progress.finish()
	if bar.done != bar.total || !strings.Contains(term.String(), "100%") {
		t.Errorf("finished: %d of %d; terminal %q", bar.done, bar.total, term.String())
	}
	if strings.Contains(term.String(), "MiB") {
		t.Errorf("the restore bar counts weights, not MiB: %q", term.String())
	}
}

func TestRestoreOutputKeepsTheErrorsNotTheVerboseLines(t *testing.T) {
	out := &restoreOutput{progress: &restoreProgress{weight: map[int]int64{}, bar: &progressLog{log: slog.New(slog.DiscardHandler)}}}
	fmt.Fprint(out, "pg_restore: creating TABLE \"public.accounts\"\npg_restore: processing item 3 SCHEMA public\n"+
		"pg_restore: from TOC entry 215; 1259 16385 TABLE accounts mastodon\n"+
		"pg_restore: error: could not execute query: ERROR:  disk full\nCommand was: CREATE TABLE public.accounts (\n    id bigint")
	want := "pg_restore: from TOC entry 215; 1259 16385 TABLE accounts mastodon\npg_restore: error: could not execute query: ERROR:  disk full\nCommand was: CREATE TABLE public.accounts (\n    id bigint"
	if got := out.errors(); got != want {
		t.Errorf("kept:\n%s\nwant:\n%s", got, want)
	}
}
