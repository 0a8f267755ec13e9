package storage

import "time"

// SetRetryDelays shortens WithRetry's backoff for a test.
func SetRetryDelays(base, max time.Duration) (restore func()) {
	oldBase, oldMax := retryBaseDelay, retryMaxDelay
	retryBaseDelay, retryMaxDelay = base, max
	return func() { retryBaseDelay, retryMaxDelay = oldBase, oldMax }
}
