package keeper

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var styleRe = regexp.MustCompile(`(?s)<style>.*</style>`)

// The keeper's starting page and the image's fallback (shown when the
// keeper is down) look the same: one stylesheet.
func TestTheStartingPageLooksLikeTheImagesFallback(t *testing.T) {
	fallback, err := os.ReadFile(filepath.Join("..", "proxy", "starting", "starting.html"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	k := &Keeper{S: Load(env(map[string]string{FrontdoorDirVar: dir, "LOCAL_DOMAIN": "social.example.org"}), nil)}
	k.say("Restoring the backup <b>.")
	page, err := os.ReadFile(filepath.Join(dir, startingPage))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := styleRe.Find(fallback), styleRe.Find(page); a == nil || string(a) != string(b) {
		t.Errorf("the stylesheets differ:\nfallback %s\nkeeper's %s", a, b)
	}
	for _, want := range []string{"<h1>social.example.org</h1>", "Restoring the backup &lt;b&gt;.", "UTC. This page refreshes itself"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("the page lacks %q:\n%s", want, page)
		}
	}
}
