package restore

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
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
	p.(*progressLog).last = p.(*progressLog).last.Add(-20e9) // 20 s ago
	p.Write(make([]byte, 5))
	if !strings.Contains(logs.String(), `msg="downloading media"`) || !strings.Contains(logs.String(), "percent=50") {
		t.Errorf("log %q", logs.String())
	}
}
