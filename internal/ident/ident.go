// Package ident holds the defaults and the validation of the settings every
// pgcoord component shares: AppName, InstanceID, Schema and Logger. listen,
// pgcache, queue, advisorylock and app fill and check them here, so the same
// value is accepted (or refused with the same reason) everywhere.
package ident

import (
	"fmt"
	"log/slog"
	"strings"
	"unicode/utf8"

	"github.com/pgcoord/pgcoord/internal/instanceid"
	"github.com/pgcoord/pgcoord/internal/schema"
)

// DefaultAppName is the app namespace when none is configured (NocoBase's
// main app).
const DefaultAppName = "main"

// MaxAppNameBytes caps an app name: it prefixes every cache key, channel,
// queue and lock key of the app.
const MaxAppNameBytes = 200

// MaxInstanceIDBytes caps an instance id: it is River's client id, which
// River limits to 100 bytes.
const MaxInstanceIDBytes = 100

// Shared are the settings every component shares, as the component's Config
// spells them.
type Shared struct {
	AppName    *string
	InstanceID *string // nil for a component without one (pgcache)
	Schema     *string
	Logger     **slog.Logger
	// AppNameField is the app name's field in errors. Defaults to "AppName"
	// (app.Config calls it Name).
	AppNameField string
}

// Defaults fills the zero settings: AppName [DefaultAppName], InstanceID a
// new hostname-pid-random id, Schema schema.Default, Logger slog.Default().
func (s Shared) Defaults() {
	if *s.AppName == "" {
		*s.AppName = DefaultAppName
	}
	if s.InstanceID != nil && *s.InstanceID == "" {
		*s.InstanceID = instanceid.New()
	}
	if *s.Schema == "" {
		*s.Schema = schema.Default
	}
	if *s.Logger == nil {
		*s.Logger = slog.Default()
	}
}

// Validate checks the settings after Defaults; cfg names the Config type in
// errors ("Config.AppName: ..."). AppName: 1 to [MaxAppNameBytes] bytes of
// UTF-8 without control characters. InstanceID: 1 to [MaxInstanceIDBytes]
// bytes, likewise. Schema: schema.Validate. Errors never quote a whole
// over-long value.
func (s Shared) Validate(cfg string) error {
	if err := Name(*s.AppName, MaxAppNameBytes); err != nil {
		field := s.AppNameField
		if field == "" {
			field = "AppName"
		}
		return fmt.Errorf("%s.%s: %w", cfg, field, err)
	}
	if s.InstanceID != nil {
		if err := Name(*s.InstanceID, MaxInstanceIDBytes); err != nil {
			return fmt.Errorf("%s.InstanceID: %w", cfg, err)
		}
	}
	if err := schema.Validate(*s.Schema); err != nil {
		return fmt.Errorf("%s.Schema: %w", cfg, err)
	}
	return nil
}

// Name checks an app name or instance id: 1 to max bytes of valid UTF-8
// without control characters (NUL included: PostgreSQL text cannot hold it).
func Name(v string, max int) error {
	switch {
	case v == "":
		return fmt.Errorf("empty")
	case len(v) > max:
		return fmt.Errorf("%d bytes, limit %d", len(v), max)
	case !utf8.ValidString(v):
		return fmt.Errorf("%q is not valid UTF-8", v)
	case strings.IndexFunc(v, isControl) >= 0:
		return fmt.Errorf("%q contains a control character", v)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
