package app

import (
	"errors"
	"os"

	"github.com/pgcoord/pgcoord/internal/ident"
	"github.com/pgcoord/pgcoord/internal/instanceid"
)

// Environment variables read by [ConfigFromEnv].
const (
	EnvDatabaseURL       = "PGCOORD_DATABASE_URL"
	EnvDirectDatabaseURL = "PGCOORD_DIRECT_DATABASE_URL"
	EnvAppName           = "PGCOORD_APP_NAME"
	EnvInstanceID        = "PGCOORD_INSTANCE_ID"
	EnvSchema            = "PGCOORD_SCHEMA"
)

// DefaultName is the application name when none is configured (NocoBase's main app).
const DefaultName = ident.DefaultAppName

// ConfigFromEnv returns a Config filled from the environment:
// PGCOORD_DATABASE_URL, PGCOORD_DIRECT_DATABASE_URL, PGCOORD_APP_NAME (default
// "main"), PGCOORD_INSTANCE_ID (default: hostname-pid-random) and
// PGCOORD_SCHEMA (default "pgcoord"). It fails when PGCOORD_DATABASE_URL is
// not set. Callers add Plugins and sub-configs before calling New.
func ConfigFromEnv() (Config, error) {
	cfg := Config{
		DatabaseURL:       os.Getenv(EnvDatabaseURL),
		DirectDatabaseURL: os.Getenv(EnvDirectDatabaseURL),
		Name:              os.Getenv(EnvAppName),
		InstanceID:        os.Getenv(EnvInstanceID),
		Schema:            os.Getenv(EnvSchema),
	}
	if cfg.DatabaseURL == "" {
		return cfg, errors.New("app: " + EnvDatabaseURL + " is not set: set it to a PostgreSQL connection string")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.InstanceID == "" {
		cfg.InstanceID = NewInstanceID()
	}
	return cfg, nil
}

// NewInstanceID returns hostname-pid-random, unique per process start.
func NewInstanceID() string { return instanceid.New() }
