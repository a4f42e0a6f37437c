package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/internal/connname"
)

// ErrListenUnsupported is returned by Start when a NOTIFY sent through the pool
// never reaches a LISTEN connection: the usual cause is PgBouncer (or another
// pooler) in transaction mode, which cannot carry LISTEN.
var ErrListenUnsupported = errors.New("app: LISTEN/NOTIFY does not work through this connection (a transaction-mode pooler such as PgBouncer?): set Config.DirectDatabaseURL (env " + EnvDirectDatabaseURL + ") to a direct PostgreSQL connection string")

// listenCheckTimeout bounds the LISTEN self-check at Start.
const listenCheckTimeout = 5 * time.Second

// directConnConfig is the configuration of the dedicated connections: the
// direct pool's when DirectDatabaseURL is set, else the pool's own.
func (a *App) directConnConfig() *pgx.ConnConfig {
	return a.sessionPool().Config().ConnConfig.Copy()
}

// checkListen proves that a NOTIFY sent through the pool reaches a LISTEN on a
// dedicated connection, as pub/sub and lock wake-ups need.
func (a *App) checkListen(ctx context.Context) error {
	cc := a.directConnConfig()
	connname.Set(cc, a.cfg.Name, a.cfg.InstanceID, connname.RoleCheck)
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("app: open the dedicated (LISTEN) connection: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// The channel is built from fixed text and the instance id is passed only as
	// a parameter to pg_notify: no user string becomes an identifier.
	const channel = "pgcoord_listen_check"
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		if conn.IsClosed() { // the connection was lost, not refused LISTEN
			return fmt.Errorf("app: LISTEN self-check: %w", err)
		}
		return fmt.Errorf("%w (LISTEN failed: %v)", ErrListenUnsupported, err)
	}
	token := NewInstanceID()
	if _, err := a.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, channel, token); err != nil {
		return fmt.Errorf("app: LISTEN self-check: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, listenCheckTimeout)
	defer cancel()
	for {
		n, err := conn.WaitForNotification(wctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if wctx.Err() == nil || conn.IsClosed() {
				// The connection failed (cut, server shut down): that says
				// nothing about a pooler.
				return fmt.Errorf("app: LISTEN self-check: %w", err)
			}
			return ErrListenUnsupported
		}
		if n.Payload == token {
			return nil
		}
	}
}
