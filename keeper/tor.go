package keeper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/frontdoor"
	"github.com/mastodon-on-balena/mastodon-balena/instance"
	"github.com/mastodon-on-balena/mastodon-balena/supervisor"
)

// onionHostFile is where the keeper tells the proxy the onion address, in
// the frontdoor volume, for the clearnet site's Onion-Location header.
const onionHostFile = "onion-hostname"

// LaunchTor runs tor (argv, without its -f) with the onion service's
// configuration when TOR_ENABLED is true, and otherwise idles quietly
// until the next start. It stays tor's parent: tor resolves the proxy's
// name only when it reads its configuration, so a proxy that comes back at
// another address is re-resolved and tor reloaded; and a key the keeper
// replaced (a restore brought the instance's own) makes it restart tor.
// It returns when ctx is done, or with an error when tor exits.
func (k *Keeper) LaunchTor(ctx context.Context, argv []string) error {
	log := k.logger("tor")
	for _, p := range k.S.DoorProblems() {
		if p.Var == frontdoor.TorVar {
			log.Error(p.String(), "variable", p.Var)
		}
	}
	if !k.S.Door.Tor {
		log.Info("the Tor onion service is off; to reach this instance at a .onion address as well, set TOR_ENABLED=true")
		<-ctx.Done()
		return nil
	}
	if len(argv) == 0 {
		return errors.New("launch: no command given after --")
	}
	upstream := k.S.Getenv(frontdoor.TorUpstreamVar)
	if upstream == "" {
		upstream = frontdoor.DefaultTorUpstream
	}
	t := &torRunner{argv: argv, dir: frontdoor.TorDir(k.S.Getenv), upstream: upstream, log: log, poll: 10 * time.Second,
		lookup: net.DefaultResolver.LookupHost}
	return t.run(ctx)
}

type torRunner struct {
	argv     []string
	dir      string
	upstream string
	log      *slog.Logger
	poll     time.Duration
	lookup   func(ctx context.Context, host string) ([]string, error)
}

func (t *torRunner) run(ctx context.Context) error {
	host, port, err := net.SplitHostPort(t.upstream)
	if err != nil {
		return fmt.Errorf("%s is %q; it must be host:port (example: %s=%s)", frontdoor.TorUpstreamVar, t.upstream, frontdoor.TorUpstreamVar, frontdoor.DefaultTorUpstream)
	}
	if err := os.MkdirAll(t.dir, 0o700); err != nil {
		return fmt.Errorf("tor: %w", err)
	}
	torrc := filepath.Join(os.TempDir(), "mastokeeper-torrc")
	for {
		addr, err := t.resolve(ctx, host, port)
		if err != nil {
			return nil // ctx is done
		}
		if err := os.WriteFile(torrc, []byte(frontdoor.Torrc(t.dir, addr)), 0o644); err != nil {
			return fmt.Errorf("tor: %w", err)
		}
		// What the keeper put last, read before tor starts: a key put
		// after this moment may be one tor did not read.
		put := frontdoor.KeyPut(t.dir)
		cmd := exec.Command(t.argv[0], append(append([]string{}, t.argv[1:]...), "-f", torrc)...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("tor: %w", err)
		}
		t.log.Info("tor started; the onion service forwards to " + t.upstream + " (" + addr + ")")
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		restart, err := t.watch(ctx, cmd, done, host, port, &addr, torrc, put)
		if !restart {
			return err
		}
	}
}

// watch waits for tor to exit or ctx to be done, reloading tor when the
// proxy's address changes. restart says the keeper put a key since put
// (read before tor started): tor was stopped to start again with it.
func (t *torRunner) watch(ctx context.Context, cmd *exec.Cmd, done chan error, host, port string, addr *string, torrc string, put string) (restart bool, err error) {
	for {
		select {
		case <-ctx.Done():
			t.stop(cmd, done)
			return false, nil
		case err := <-done:
			return false, fmt.Errorf("tor exited: %v", err)
		case <-time.After(t.poll):
		}
		if frontdoor.KeyPut(t.dir) != put {
			t.log.Info("the keeper put the instance's onion key into tor's volume (a restore brought it back); restarting tor with it")
			t.stop(cmd, done)
			return true, nil
		}
		ips, err := t.lookup(ctx, host)
		if err != nil || len(ips) == 0 || slices.ContainsFunc(ips, func(ip string) bool { return net.JoinHostPort(ip, port) == *addr }) {
			continue // unresolvable for a moment, or still there: keep it
		}
		*addr = net.JoinHostPort(ips[0], port)
		if err := os.WriteFile(torrc, []byte(frontdoor.Torrc(t.dir, *addr)), 0o644); err != nil {
			t.log.Warn("could not rewrite tor's configuration: " + err.Error())
			continue
		}
		t.log.Info("the proxy moved to " + *addr + "; tor reloads its configuration")
		cmd.Process.Signal(syscall.SIGHUP)
	}
}

// resolve waits until the upstream's name resolves (the proxy's container
// is up) and returns its address.
func (t *torRunner) resolve(ctx context.Context, host, port string) (string, error) {
	var last time.Time
	for wait := 500 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		ips, err := t.lookup(ctx, host)
		if err == nil && len(ips) > 0 {
			return net.JoinHostPort(ips[0], port), nil
		}
		if time.Since(last) >= 30*time.Second {
			t.log.Info("waiting for " + host + " to resolve (the proxy service must be running)")
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(wait):
		}
	}
}

func (t *torRunner) stop(cmd *exec.Cmd, done chan error) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// watchOnion keeps the onion service and the instance record in step until
// ctx is done; see syncOnion.
func (k *Keeper) watchOnion(ctx context.Context) {
	log := k.logger("tor")
	var said string
	for {
		if err := k.syncOnion(ctx, log); err != nil && err.Error() != said {
			if errors.Is(err, errNoOnionYet) {
				log.Info(err.Error())
			} else {
				log.Warn(err.Error())
			}
			said = err.Error()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(15 * time.Second):
		}
	}
}

// syncOnion keeps the onion service's key in the instance record, so that
// backups carry it, and the record's key in tor's directory, so that a
// restore brings the address back; it tells the proxy the address and
// restarts web when Mastodon must learn it (ALTERNATE_DOMAINS).
func (k *Keeper) syncOnion(ctx context.Context, log *slog.Logger) error {
	if !k.S.Door.Tor {
		k.writeOnionHost("")
		return nil
	}
	if k.S.Dir.Has(instance.MarkerRestoring) {
		return nil
	}
	rec, err := k.S.Dir.Read()
	if err != nil {
		return nil // not provisioned yet
	}
	dir := frontdoor.TorDir(k.S.Getenv)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("TOR_ENABLED is true, but the keeper has no tor volume at %s; the onion address is not backed up. Mount the tor volume into the keeper service as docker-compose.yml does", dir)
	}
	have, haveErr := frontdoor.ReadOnionKey(dir)
	switch {
	case rec.Onion == nil && haveErr != nil:
		if errors.Is(haveErr, fs.ErrNotExist) {
			return errNoOnionYet
		}
		return haveErr
	case rec.Onion == nil:
		if err := k.adoptOnion(ctx, have); err != nil {
			return err
		}
		k.writeOnionHost(have.Hostname)
		log.Info("the onion service's address is " + have.Hostname + "; from now on the backups carry its key")
		k.restartWeb(ctx, log, "so that Mastodon answers for the onion address")
		return nil
	case haveErr != nil || !sameOnion(have, rec.Onion):
		if err := frontdoor.WriteOnionKey(dir, rec.Onion); err != nil {
			return err
		}
		k.writeOnionHost(rec.Onion.Hostname)
		log.Info("put the instance's onion key into tor's volume; the tor service restarts with it (address " + rec.Onion.Hostname + ")")
		return nil
	}
	k.writeOnionHost(rec.Onion.Hostname)
	return nil
}

var errNoOnionYet = errors.New("waiting for the tor service to create the onion address")

// adoptOnion records key as the instance's, unless another keeper did
// first.
func (k *Keeper) adoptOnion(ctx context.Context, key *instance.OnionKey) error {
	unlock, err := k.S.Dir.Lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := k.S.Dir.Read()
	if err != nil || rec.Onion != nil {
		return err
	}
	rec.Onion = key
	return k.S.Dir.Replace(rec)
}

func sameOnion(a, b *instance.OnionKey) bool {
	return a.Hostname == b.Hostname && bytes.Equal(a.PublicKey, b.PublicKey) && bytes.Equal(a.SecretKey, b.SecretKey)
}

// writeOnionHost tells the proxy the onion address ("" removes it).
func (k *Keeper) writeOnionHost(host string) {
	p, ok := k.frontdoorFile(onionHostFile)
	if !ok {
		return
	}
	if host == "" {
		os.Remove(p)
		return
	}
	if b, err := os.ReadFile(p); err == nil && string(b) == host {
		return
	}
	if err := instance.WriteFileAtomic(p, []byte(host), 0o644); err != nil {
		k.logger("tor").Warn("could not tell the proxy the onion address: " + err.Error())
	}
}

// restartWeb restarts the web service through balena's supervisor, or says
// how to.
func (k *Keeper) restartWeb(ctx context.Context, log *slog.Logger, why string) {
	sv := supervisor.FromEnv(k.S.Getenv)
	if sv == nil {
		log.Warn("restart the web service " + why + ": docker compose restart web")
		return
	}
	if err := sv.RestartService(ctx, "web"); err != nil {
		log.Warn("could not restart the web service "+why+"; restart it from the dashboard", "error", err.Error())
		return
	}
	log.Info("restarted the web service " + why)
}
