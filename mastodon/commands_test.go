package mastodon

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestPasswordLine_FindsTheNewPassword(t *testing.T) {
	tests := map[string]string{
		"OK\nNew password: 0123abcdef4567\n":                         "0123abcdef4567",
		"New password: 0123abcdef4567":                               "0123abcdef4567",
		"OK\r\nNew password: 0123abcdef4567\r\n":                     "0123abcdef4567",
		"some warning\nOK\nNew password: a1b2c3d4e5f6   \ntrailer\n": "a1b2c3d4e5f6",
	}
	for out, want := range tests {
		m := passwordLine.FindStringSubmatch(out)
		if m == nil {
			t.Errorf("no password found in %q", out)
			continue
		}
		if m[1] != want {
			t.Errorf("password from %q = %q; want %q", out, m[1], want)
		}
	}
}

func TestPasswordLine_IgnoresOtherOutput(t *testing.T) {
	for _, out := range []string{
		"",
		"OK\n",
		"Failed to create user\n",
		"Old password: hunter2\n",
		"  New password: indented\n",
		"New password:\n",
		"New password: two words\n",
	} {
		if m := passwordLine.FindStringSubmatch(out); m != nil {
			t.Errorf("found password %q in %q", m[1], out)
		}
	}
}

func TestPasswordLine_RedactionHidesThePassword(t *testing.T) {
	out := "OK\nNew password: s3cr3tpassw0rd\n"
	red := passwordLine.ReplaceAllString(out, "New password: [redacted]")
	if strings.Contains(red, "s3cr3tpassw0rd") || !strings.Contains(red, "[redacted]") {
		t.Errorf("redacted output = %q", red)
	}
}

// recorder collects log messages from a JSON slog handler writing to a
// buffer.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.Write(p)
}

func (r *recorder) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(r, nil)).With("command", "rails db:migrate")
}

func (r *recorder) messages(t *testing.T) []string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var msgs []string
	dec := json.NewDecoder(bytes.NewReader(r.buf.Bytes()))
	for {
		var rec struct {
			Msg     string `json:"msg"`
			Level   string `json:"level"`
			Command string `json:"command"`
		}
		if err := dec.Decode(&rec); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if rec.Command != "rails db:migrate" {
			t.Errorf("log record %q lost its command attribute", rec.Msg)
		}
		msgs = append(msgs, rec.Msg)
	}
	return msgs
}

func TestLineLogger_OneRecordPerLine(t *testing.T) {
	var r recorder
	l := &lineLogger{log: r.logger()}
	in := []byte("== 20240101 CreateThings: migrating\n-- create_table(:things)\n   -> 0.01s\n")
	if n, err := l.Write(in); err != nil || n != len(in) {
		t.Errorf("Write = %d, %v; want %d, nil", n, err, len(in))
	}
	l.flush()
	want := []string{"== 20240101 CreateThings: migrating", "-- create_table(:things)", "   -> 0.01s"}
	if got := r.messages(t); !slices.Equal(got, want) {
		t.Errorf("messages = %q; want %q", got, want)
	}
}

func TestLineLogger_JoinsPartialWrites(t *testing.T) {
	var r recorder
	l := &lineLogger{log: r.logger()}
	for _, chunk := range []string{"hel", "lo wor", "ld\nsecond", " line\nthi", "rd"} {
		if _, err := io.WriteString(l, chunk); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.messages(t); !slices.Equal(got, []string{"hello world", "second line"}) {
		t.Errorf("before flush: messages = %q; an unterminated line must wait", got)
	}
	l.flush()
	if got := r.messages(t); !slices.Equal(got, []string{"hello world", "second line", "third"}) {
		t.Errorf("after flush: messages = %q", got)
	}
	l.flush() // nothing left: no empty record
	if got := r.messages(t); len(got) != 3 {
		t.Errorf("a second flush logged again: %q", got)
	}
}

func TestLineLogger_DropsBlankLinesAndCarriageReturns(t *testing.T) {
	var r recorder
	l := &lineLogger{log: r.logger()}
	io.WriteString(l, "first\r\n\n   \n\r\nsecond\r\n")
	l.flush()
	if got := r.messages(t); !slices.Equal(got, []string{"first", "second"}) {
		t.Errorf("messages = %q; want [first second]", got)
	}
}

func TestLineLogger_ConcurrentWritersKeepLinesWhole(t *testing.T) {
	var r recorder
	l := &lineLogger{log: r.logger()}
	var wg sync.WaitGroup
	for _, s := range []string{"stdout line\n", "stderr line\n"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				io.WriteString(l, s)
			}
		}()
	}
	wg.Wait()
	l.flush()
	msgs := r.messages(t)
	if len(msgs) != 100 {
		t.Errorf("got %d records; want 100", len(msgs))
	}
	for _, m := range msgs {
		if m != "stdout line" && m != "stderr line" {
			t.Errorf("mangled line %q", m)
		}
	}
}

func TestTootctl_RefusesAUsernameThatLooksLikeAnOption(t *testing.T) {
	var r recorder
	run := Runner{Log: r.logger()}
	for _, f := range []func() (string, error){
		func() (string, error) { return run.ResetPassword(context.Background(), "--help") },
		func() (string, error) { return run.CreateOwner(context.Background(), "-x", "a@example.org") },
	} {
		pw, err := f()
		if err == nil || pw != "" || !strings.Contains(err.Error(), "must not start with '-'") {
			t.Errorf("= %q, %v; want a refusal before running tootctl", pw, err)
		}
	}
}
