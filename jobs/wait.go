package jobs

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/mastodon-on-balena/mastodon-balena/retry"
)

// WaitForRedis waits until Redis answers PING, with backoff, logging what
// it waits for. A Redis that demands a password counts as up: it answered.
func WaitForRedis(ctx context.Context, log *slog.Logger, addr string) error {
	err := retry.Until(ctx, log.With("server", addr),
		"waiting for Redis (the redis service); it may still be starting", "Redis is up",
		func() error { return pingRedis(ctx, addr) })
	if err != nil {
		return fmt.Errorf("redis: gave up waiting for %s: %w", addr, err)
	}
	return nil
}

func pingRedis(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(line, "+PONG"), strings.HasPrefix(line, "-NOAUTH"):
		return nil
	case strings.HasPrefix(line, "-LOADING"):
		return fmt.Errorf("redis is loading its data set into memory")
	}
	return fmt.Errorf("unexpected answer to PING: %q", strings.TrimSpace(line))
}
