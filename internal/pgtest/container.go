package pgtest

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"
)

// ContainerImage is the image used when tests run against testcontainers.
const ContainerImage = "postgres:15-alpine"

// dockerAnswers reports whether a Docker engine answers within a short time.
// It checks for a socket or DOCKER_HOST first, so machines without Docker do
// not pay for testcontainers' client setup.
func dockerAnswers(ctx context.Context) bool {
	if os.Getenv("DOCKER_HOST") == "" {
		if _, err := os.Stat("/var/run/docker.sock"); err != nil {
			return false
		}
	}
	ok := false
	func() {
		defer func() { _ = recover() }() // testcontainers panics on some broken setups
		p, err := testcontainers.NewDockerProvider()
		if err != nil {
			return
		}
		defer p.Close()
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		ok = p.Health(hctx) == nil
	}()
	return ok
}

// StartContainer starts a PostgreSQL container with testcontainers-go.
func StartContainer(ctx context.Context) (*Server, error) {
	ctr, err := tcpostgres.Run(ctx, ContainerImage,
		tcpostgres.WithDatabase("postgres"),
		tcpostgres.WithUsername("postgres"),
		tcpostgres.WithPassword("postgres"),
		tcpostgres.BasicWaitStrategies(),
		testcontainers.WithCmd("postgres", "-c", "fsync=off", "-c", "max_connections=400", "-c", "max_locks_per_transaction=256"),
	)
	if err != nil {
		if ctr != nil {
			_ = testcontainers.TerminateContainer(ctr)
		}
		return nil, fmt.Errorf("pgtest: start container: %w", err)
	}
	url, err := ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		_ = testcontainers.TerminateContainer(ctr)
		return nil, err
	}
	return &Server{
		Kind:     "testcontainers",
		adminURL: url,
		stopFn:   func(context.Context) error { return testcontainers.TerminateContainer(ctr) },
	}, nil
}
