package ident

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pgcoord/pgcoord/internal/schema"
)

// TestShared is the one table of the shared settings' defaults and rules;
// every component's Config goes through Shared.
func TestShared(t *testing.T) {
	t.Parallel()
	type cfg struct {
		app, instance, schema string
		noInstance            bool
	}
	cases := []struct {
		name string
		in   cfg
		err  string // "" = valid
	}{
		{"defaults", cfg{}, ""},
		{"all set", cfg{app: "shop", instance: "node-a", schema: "coord"}, ""},
		{"unicode app", cfg{app: "магазин:eu"}, ""},
		{"app at the cap", cfg{app: strings.Repeat("a", MaxAppNameBytes)}, ""},
		{"app over the cap", cfg{app: strings.Repeat("a", MaxAppNameBytes+1)}, "Config.AppName: 201 bytes, limit 200"},
		{"app not UTF-8", cfg{app: "a\xffb"}, "Config.AppName: \"a\\xffb\" is not valid UTF-8"},
		{"app with NUL", cfg{app: "a\x00b"}, "Config.AppName: \"a\\x00b\" contains a control character"},
		{"app with newline", cfg{app: "a\nb"}, "contains a control character"},
		{"instance at the cap", cfg{instance: strings.Repeat("i", MaxInstanceIDBytes)}, ""},
		{"instance over the cap", cfg{instance: strings.Repeat("i", MaxInstanceIDBytes+1)}, "Config.InstanceID: 101 bytes, limit 100"},
		{"instance with NUL", cfg{instance: "x\x00"}, "Config.InstanceID:"},
		{"no instance id", cfg{noInstance: true}, ""},
		{"bad schema", cfg{schema: "Bad-Name"}, "Config.Schema: pgcoord: invalid schema name"},
		{"reserved schema", cfg{schema: "pg_x"}, "reserved prefix"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.in
			var logger *slog.Logger
			s := Shared{AppName: &c.app, InstanceID: &c.instance, Schema: &c.schema, Logger: &logger}
			if c.noInstance {
				s.InstanceID = nil
			}
			before := c
			s.Defaults()
			require.Same(t, slog.Default(), logger, "nil logger → slog.Default()")
			require.Equal(t, orDefault(before.app, DefaultAppName), c.app)
			require.Equal(t, orDefault(before.schema, schema.Default), c.schema)
			if c.noInstance {
				require.Empty(t, c.instance)
			} else if before.instance == "" {
				require.NotEmpty(t, c.instance, "a generated instance id")
			}
			err := s.Validate("Config")
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.err)
			require.Less(t, len(err.Error()), 160, "the error does not quote a whole over-long value")
		})
	}
	// A logger that is set is kept.
	l := slog.New(slog.DiscardHandler)
	var a, i, sc string
	Shared{AppName: &a, InstanceID: &i, Schema: &sc, Logger: &l}.Defaults()
	require.NotSame(t, slog.Default(), l)
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}
