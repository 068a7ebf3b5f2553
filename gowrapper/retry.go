package pgmig

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Retrying a blocked push (PushOpts.Retries). A migration that gave up
// waiting for a lock (the engine's PM017) rolled back its whole
// transaction: nothing of it was applied and nothing waits any more, so
// pushing the batch again later is safe — the engine skips what earlier
// transactions committed. The blocker is typically a long transaction (a
// report, a pg_dump) that ends on its own; each attempt costs the table's
// readers at most one DDL lock timeout of waiting, and the pauses between
// attempts are when they go through.

const (
	// retryFirstWait is the pause after the first blocked attempt; each
	// later one doubles it, up to PushOpts.RetryMaxWait.
	retryFirstWait = 500 * time.Millisecond
	// defaultRetryMaxWait is PushOpts.RetryMaxWait's default.
	defaultRetryMaxWait = 30 * time.Second
)

// RetryAttempt is an attempt of Push that was blocked and will be retried
// (PushOpts.OnRetry).
type RetryAttempt struct {
	// Attempt is the number of the attempt that was blocked (1 = the
	// first push), of at most Attempts (1 + PushOpts.Retries).
	Attempt, Attempts int
	// Wait is the pause before the next attempt.
	Wait time.Duration
	// Err says which migration was blocked, on which relation, by whom.
	Err *BlockedError
}

// pushWithRetries is Push: pushOnce, again after a pause while a
// migration is blocked and retries are left.
func (c *Client) pushWithRetries(ctx context.Context, migrations []*Migration, opts *PushOpts) (*PushResult, error) {
	attempts := 1 + max(0, opts.Retries)
	maxWait := opts.RetryMaxWait
	if maxWait <= 0 {
		maxWait = defaultRetryMaxWait
	}
	for attempt := 1; ; attempt++ {
		res, err := c.pushOnce(ctx, migrations, opts)
		if res != nil {
			res.Attempts = attempt
		}
		var blocked *BlockedError
		if !errors.As(err, &blocked) {
			return res, err
		}
		blocked.Attempts, blocked.MaxAttempts = attempt, attempts
		// A non-transactional statement that timed out left the statements
		// before it applied and the run recorded as failed: every push
		// refuses until an operator resolves it.
		if blocked.NonTransactional || attempt >= attempts {
			return res, err
		}
		wait := retryWait(attempt, maxWait)
		if opts.OnRetry != nil {
			opts.OnRetry(RetryAttempt{Attempt: attempt, Attempts: attempts, Wait: wait, Err: blocked})
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, err
		case <-t.C:
		}
		if attempt == 1 && opts.HistoryDigest != "" {
			// Read before the first attempt: stale now if earlier
			// transactions of it committed. Let Push read it again.
			o := *opts
			o.HistoryDigest = ""
			opts = &o
		}
	}
}

// retryWait is the pause after blocked attempt n (1-based): 500ms doubling
// each time, capped at maxWait, with "equal jitter" (a uniformly random
// point in its upper half) so that replicas blocked by the same session do
// not all come back at the same moment.
func retryWait(n int, maxWait time.Duration) time.Duration {
	d := retryFirstWait
	for i := 1; i < n && d < maxWait; i++ {
		d *= 2
	}
	d = min(d, maxWait)
	half := d / 2
	return half + rand.N(half+1)
}
