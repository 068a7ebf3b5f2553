package pgmig

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// lockHistory opens a transaction on conn that holds the history lock,
// waiting as the engine's lock protocol decides (pgmig.lock_wait,
// sql/src/40_lock_holder.sql): each attempt is a transaction of its own;
// when the engine says the lock was not granted, the transaction is rolled
// back and the next attempt comes after retry_after, with nothing held in
// between (no snapshot that a running CREATE INDEX CONCURRENTLY would wait
// for). The engine raises PM003, naming the holder, when the time is up.
// timeout 0 means the session's lock_timeout (0 there: no limit), a
// negative timeout no wait at all. A cancelled ctx ends the wait with
// ctx.Err(). Everything goes through the simple protocol: an idle
// extended-protocol portal would keep a snapshot registered (see
// applyNonTransactional).
func (c *Client) lockHistory(ctx context.Context, conn *pgx.Conn, timeout time.Duration) (pgx.Tx, error) {
	var lockTimeout any
	switch {
	case timeout < 0:
		lockTimeout = "0"
	case timeout > 0:
		lockTimeout = intervalArg(timeout)
	}
	var since pgtype.Timestamptz
	attempt := 0
	for {
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
		if err != nil {
			return nil, err
		}
		var acquired bool
		var retry pgtype.Interval
		err = tx.QueryRow(ctx, `select acquired, retry_after, waiting_since, attempt from pgmig.lock_wait($1::interval, $2::timestamptz, $3::integer, $4::text)`,
			pgx.QueryExecModeSimpleProtocol, lockTimeout, since, attempt, c.scope()).Scan(&acquired, &retry, &since, &attempt)
		if err == nil && acquired {
			return tx, nil
		}
		_ = tx.Rollback(context.WithoutCancel(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		}
		if wait := intervalDuration(retry); wait > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(wait):
			}
		}
	}
}

func intervalDuration(d pgtype.Interval) time.Duration {
	if !d.Valid {
		return 0
	}
	return time.Duration(d.Microseconds)*time.Microsecond +
		time.Duration(d.Days)*24*time.Hour + time.Duration(d.Months)*30*24*time.Hour
}
