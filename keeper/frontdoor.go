package keeper

import (
	"bytes"
	"errors"
	"html/template"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/instance"
)

// The starting page: while web does not answer, the proxy shows the page
// the keeper writes into the frontdoor volume (mounted read-only there),
// saying what the keeper does now. It holds the instance's name, a step
// and a time - never anything from the keeper's own volume, which holds
// the secrets and is never mounted into the proxy.
const (
	FrontdoorDirVar     = "FRONTDOOR_DIR"
	DefaultFrontdoorDir = "/var/lib/mastokeeper-frontdoor"
	startingPage        = "starting.html"
)

var startingTmpl = template.Must(template.New("starting").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="15">
<title>{{.Name}}</title>
<style>
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#191b22;color:#d9e1e8}
main{max-width:32rem;padding:2rem;text-align:center}
h1{font-size:1.5rem;margin:0 0 .5rem;color:#fff;overflow-wrap:anywhere}
p{margin:.25rem 0}
.small{color:#9baec8;font-size:.875rem;margin-top:1.5rem}
</style>
</head>
<body>
<main>
<h1>{{.Name}}</h1>
<p>{{.Step}}</p>
<p class="small">Since {{.Since}} UTC. This page refreshes itself and goes away once the server answers.</p>
</main>
</body>
</html>
`))

// say writes the starting page with what the keeper does now. Without the
// frontdoor volume (its directory absent) there is no page to write; a
// page that cannot be written is logged, never a reason to stop.
func (k *Keeper) say(step string) {
	p, ok := k.frontdoorFile(startingPage)
	if !ok {
		return
	}
	name := k.domain()
	if name == "" {
		name = "Mastodon"
	}
	var b bytes.Buffer
	startingTmpl.Execute(&b, struct{ Name, Step, Since string }{name, step, time.Now().UTC().Format("2006-01-02 15:04")})
	err := instance.WriteFileAtomic(p, b.Bytes(), 0o644)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		k.logger("keeper").Warn("could not write the starting page: " + err.Error())
	}
}

// frontdoorFile is the path of file name in the frontdoor volume; ok is
// false without the volume (its directory absent): nothing to write then.
func (k *Keeper) frontdoorFile(name string) (path string, ok bool) {
	dir := k.S.Getenv(FrontdoorDirVar)
	if dir == "" {
		dir = DefaultFrontdoorDir
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", false
	}
	return filepath.Join(dir, name), true
}
