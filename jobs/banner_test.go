package jobs

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// framed checks that out is a banner: a bar, the title, a bar, the lines,
// a bar, every row of the same width, and returns the rows' contents.
func framed(t *testing.T, out string) (title string, lines []string) {
	t.Helper()
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("banner does not end with a newline: %q", out)
	}
	rows := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(rows) < 4 {
		t.Fatalf("banner has %d rows:\n%s", len(rows), out)
	}
	width := utf8.RuneCountInString(rows[0])
	bar := strings.Repeat("=", width)
	for i, r := range rows {
		if n := utf8.RuneCountInString(r); n != width {
			t.Errorf("row %d is %d wide; want %d like the others:\n%s", i, n, width, out)
		}
		switch i {
		case 0, 2, len(rows) - 1:
			if r != bar {
				t.Errorf("row %d = %q; want a bar of '='", i, r)
			}
		default:
			if !strings.HasPrefix(r, "| ") || !strings.HasSuffix(r, " |") {
				t.Errorf("row %d = %q; want it framed by '| ' and ' |'", i, r)
				continue
			}
			content := strings.TrimRight(r[2:len(r)-2], " ")
			if i == 1 {
				title = content
			} else {
				lines = append(lines, content)
			}
		}
	}
	return title, lines
}

func TestWriteBanner_FramesEveryLineAtEqualWidth(t *testing.T) {
	var b strings.Builder
	in := []string{
		"Open:      https://social.example.org",
		"Log in as: alice@example.org",
		"Password:  0123456789abcdef0123456789abcdef",
		"",
		"This password is shown ONCE. Change it after logging in.",
	}
	WriteBanner(&b, "Your Mastodon is ready", in...)
	title, lines := framed(t, b.String())
	if title != "Your Mastodon is ready" {
		t.Errorf("title = %q", title)
	}
	if strings.Join(lines, "\n") != strings.Join(in, "\n") {
		t.Errorf("lines = %q; want %q", lines, in)
	}
	// The longest line fits exactly: "| " + line + " |".
	if got, want := len(strings.SplitN(b.String(), "\n", 2)[0]), len(in[4])+4; got != want {
		t.Errorf("banner is %d wide; want %d", got, want)
	}
}

func TestWriteBanner_TitleLongerThanEveryLine(t *testing.T) {
	var b strings.Builder
	WriteBanner(&b, "A rather long title for a banner", "short", "")
	title, lines := framed(t, b.String())
	if title != "A rather long title for a banner" || len(lines) != 2 || lines[0] != "short" {
		t.Errorf("title %q, lines %q", title, lines)
	}
}

func TestWriteBanner_NoLines(t *testing.T) {
	var b strings.Builder
	WriteBanner(&b, "Title")
	want := "=========\n| Title |\n=========\n=========\n"
	if b.String() != want {
		t.Errorf("banner = %q; want %q", b.String(), want)
	}
}

func TestWriteBanner_NonASCIILinesStayAligned(t *testing.T) {
	var b strings.Builder
	WriteBanner(&b, "Prêt", "Connexion : zoë@exemple.fr", "Mot de passe : abc")
	framed(t, b.String())
}

func TestWriteBanner_WritesInOneCall(t *testing.T) {
	// One write keeps the banner whole when other goroutines log at once.
	var w countingWriter
	WriteBanner(&w, "Title", "a", "b", "c")
	if w.calls != 1 {
		t.Errorf("WriteBanner made %d writes; want 1", w.calls)
	}
}

type countingWriter struct{ calls int }

func (w *countingWriter) Write(p []byte) (int, error) { w.calls++; return len(p), nil }
