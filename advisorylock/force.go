package advisorylock

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgcoord/pgcoord/internal/lockkey"
)

// ForceRelease ends a grant of key from outside its holder, as an operator
// does from the dashboard ("force free"): the grant whose fencing token is
// token, or, with token 0, whichever grant holds key now. Like a Release, it
// passes the lease to the first live instance waiting for key (a new grant,
// a larger token, that instance alone notified) or frees it when nobody
// waits. It reports whether it ended a grant: false when key has no such
// grant (another token holds it, it was released already, or it was never
// taken). It needs no Manager; cfg names the app and schema (nil: defaults;
// its other fields are unused).
//
// The former holder is not told at once: its [Lock.CheckTx], [Lock.Extend]
// and renewals fail with ErrNotHeld from now on, so its Done closes at its
// next renewal or at its local deadline. A fenced transaction that holds
// the row (CheckTx) is not overtaken: the lease is then freed without a
// designation, and the next grant waits for that transaction. Errors:
// ErrInvalidKey or ErrInvalidConfig (wrapped) for a bad key or app name,
// or the database's error; nothing is changed then.
func ForceRelease(ctx context.Context, pool *pgxpool.Pool, cfg *Config, key string, token int64) (bool, error) {
	if pool == nil {
		return false, errors.New("advisorylock: force release: nil pool")
	}
	if err := validateKey(key); err != nil {
		return false, fmt.Errorf("advisorylock: force release: %w", err)
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return false, fmt.Errorf("advisorylock: force release: %w: %w", ErrInvalidConfig, err)
	}
	if token < 0 {
		return false, nil // tokens are positive: no grant has it
	}
	var tok any // nil: whichever grant holds the key
	if token > 0 {
		tok = token
	}
	channel := channelName(c.Schema)
	q := buildQueries(c.Schema, channel, tokenBlock)
	class := lockkey.IdentityClass(c.Schema)
	payload := strconv.FormatUint(keyHash(c.AppName, key), 16)
	var (
		next         int32
		newToken, us int64
		freed        bool
		notified     *bool
	)
	err := pool.QueryRow(ctx, q.release, c.AppName, key, tok, int32(0), class, nil, "", channel, payload, true).
		Scan(&next, &newToken, &freed, &us, &notified)
	if errors.Is(err, pgx.ErrNoRows) {
		// No such grant, or a transaction holds the row: free it plainly
		// (the first in line is notified to try).
		var (
			broadcast bool
			n         int64
		)
		err = pool.QueryRow(ctx, q.releasePlain, c.AppName, key, tok, int32(0), class, channel, payload, true, nil, nil).Scan(&broadcast, &n)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("advisorylock: force release %q: %w", key, err)
	}
	return true, nil
}
