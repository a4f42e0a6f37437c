package pgcache_test

import "github.com/pgcoord/pgcoord/migrations"

func migrationsErrInvalidSchema() error { return migrations.ErrInvalidSchema }
