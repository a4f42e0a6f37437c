package app_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/app"
	"github.com/pgcoord/pgcoord/internal/pgtest"
	"github.com/pgcoord/pgcoord/listen"
	"github.com/pgcoord/pgcoord/pgcache"
)

// startPgBouncer runs a real PgBouncer in transaction mode in front of db and
// returns a connection string through it. It skips when pgbouncer is not
// installed (.ci/run installs it).
func startPgBouncer(t *testing.T, db *pgtest.DB) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		bin = "/usr/sbin/pgbouncer"
		if _, err := os.Stat(bin); err != nil {
			t.Skip("pgbouncer is not installed (apt-get install -y pgbouncer)")
		}
	}
	u, err := url.Parse(db.URL)
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())

	// Not t.TempDir: its parent is private to root, and pgbouncer runs as postgres.
	dir, err := os.MkdirTemp("", "pgcoord-pgbouncer-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	userlist := filepath.Join(dir, "userlist.txt")
	require.NoError(t, os.WriteFile(userlist, []byte(fmt.Sprintf("%q \"\"\n", u.User.Username())), 0o644))
	ini := filepath.Join(dir, "pgbouncer.ini")
	require.NoError(t, os.WriteFile(ini, []byte(fmt.Sprintf(`[databases]
* = host=%s port=%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
logfile = %s
`, u.Hostname(), u.Port(), port, userlist, filepath.Join(dir, "pgbouncer.log"))), 0o644))

	cmd := exec.Command(bin, ini)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 { // pgbouncer refuses to run as root
		pu, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("running as root needs a postgres user to run pgbouncer as")
		}
		uid, _ := strconv.Atoi(pu.Uid)
		gid, _ := strconv.Atoi(pu.Gid)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		require.NoError(t, os.Chown(dir, uid, gid))
	}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	pooled := *u
	pooled.Host = fmt.Sprintf("127.0.0.1:%d", port)
	q := pooled.Query()
	q.Set("default_query_exec_mode", "simple_protocol") // PgBouncer 1.18 has no prepared statements in transaction mode
	pooled.RawQuery = q.Encode()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		p, err := pgxpool.New(ctx, pooled.String())
		if err != nil {
			return false
		}
		defer p.Close()
		return p.Ping(ctx) == nil
	}, 15*time.Second, 50*time.Millisecond, "pgbouncer did not start")
	return pooled.String()
}

func TestStartBehindTransactionPoolerNeedsDirectURL(t *testing.T) {
	ctx, db := pgtest.Setup(t)
	pooledURL := startPgBouncer(t, db)

	// Through the pooler alone, LISTEN cannot work: Start says what to set.
	a, err := app.New(ctx, app.Config{Name: "pooled", DatabaseURL: pooledURL, InstanceID: "p1"})
	require.NoError(t, err)
	err = a.Start(ctx)
	require.ErrorIs(t, err, app.ErrListenUnsupported)
	require.ErrorContains(t, err, app.EnvDirectDatabaseURL)

	// With a direct URL for the session features, the app works behind the pooler.
	var apps []*app.App
	got := make(chan listen.Message, 4)
	for i := range 2 {
		a, err := app.New(ctx, app.Config{
			Name: "pooled", DatabaseURL: pooledURL, DirectDatabaseURL: db.URL, InstanceID: fmt.Sprintf("p%d", i),
		})
		require.NoError(t, err)
		t.Cleanup(func() { _ = a.Stop(context.Background()) })
		_, err = a.PubSub().Subscribe(ctx, "hello", func(ctx context.Context, m listen.Message) error {
			got <- m
			return nil
		}, nil)
		require.NoError(t, err)
		require.NoError(t, a.Start(ctx))
		apps = append(apps, a)
	}
	require.NoError(t, apps[0].PubSub().Publish(ctx, "hello", "through the pooler", nil))
	m := <-got
	require.Equal(t, "p0", m.Sender)
	require.JSONEq(t, `"through the pooler"`, string(m.Payload))
	// The cache goes through the pooler and is shared.
	require.NoError(t, apps[0].Cache().Set(ctx, "k", 42, 0))
	v, ok, err := pgcache.Get[int](ctx, apps[1].Cache(), "k")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 42, v)
}
