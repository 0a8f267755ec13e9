package jobs

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// WaitForRedis waits until Redis answers PING, with backoff, logging what
// it waits for. A Redis that demands a password counts as up: it answered.
func WaitForRedis(ctx context.Context, log *slog.Logger, addr string) error {
	delay := time.Second
	for attempt := 1; ; attempt++ {
		err := pingRedis(ctx, addr)
		if err == nil {
			if attempt > 1 {
				log.Info("Redis is up", "server", addr)
			}
			return nil
		}
		log.Info("waiting for Redis (the redis service); it may still be starting",
			"server", addr, "attempt", attempt, "retry_in", delay.String(), "error", err.Error())
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis: gave up waiting for %s: %w", addr, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
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
