package pgcache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	jsonv1 "github.com/go-json-experiment/json/v1"
)

// kind says how a stored value is encoded.
type kind = int16 // an alias, so pgx scans and encodes it without reflection

const (
	kindJSON  kind = 0 // value holds JSON text
	kindBytes kind = 1 // value holds raw bytes ([]byte passed through)
)

// MaxKeyBytes is the longest key accepted, in bytes.
const MaxKeyBytes = 1024

// encoded is a value ready to store.
type encoded struct {
	raw  []byte
	kind kind
}

// errNull marks a value that is nil or encodes to JSON null (wrapped with
// ErrNotCacheable): Wrap returns such a loader result without storing it.
var errNull = errors.New("encodes to null")

// encode turns a value into stored bytes. A []byte is stored as it is; a
// json.RawMessage must be valid JSON; anything else goes through
// json.Marshal. A value encoding to JSON null is not cacheable.
func encode(v any, maxBytes int) (encoded, error) {
	var e encoded
	switch x := v.(type) {
	case nil:
		return e, fmt.Errorf("%w: nil %w", ErrNotCacheable, errNull)
	case []byte:
		if x == nil {
			return e, fmt.Errorf("%w: nil []byte %w", ErrNotCacheable, errNull)
		}
		e = encoded{raw: x, kind: kindBytes}
	case json.RawMessage:
		if !json.Valid(x) {
			return e, fmt.Errorf("%w: json.RawMessage is not valid JSON", ErrNotCacheable)
		}
		e = encoded{raw: bytes.TrimSpace(x), kind: kindJSON}
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return e, fmt.Errorf("%w: %w", ErrNotCacheable, err)
		}
		e = encoded{raw: b, kind: kindJSON}
	}
	if e.kind == kindJSON && string(e.raw) == "null" {
		return encoded{}, fmt.Errorf("%w: %T %w", ErrNotCacheable, v, errNull)
	}
	if len(e.raw) > maxBytes {
		return encoded{}, fmt.Errorf("%w: %d bytes, limit %d", ErrValueTooLarge, len(e.raw), maxBytes)
	}
	return e, nil
}

// decodeInto stores a value into dst, a non-nil pointer. *[]byte receives
// the stored bytes (the JSON text of a JSON value); *json.RawMessage receives
// JSON text; anything else is filled by json.Unmarshal.
func decodeInto(raw []byte, k kind, dst any) error {
	switch d := dst.(type) {
	case *[]byte:
		*d = bytes.Clone(raw)
		return nil
	case *any:
		v, err := decodeAny(raw, k)
		if err != nil {
			return err
		}
		*d = v
		return nil
	case *json.RawMessage:
		if k != kindJSON {
			return fmt.Errorf("pgcache: decode: stored value is raw bytes, not JSON")
		}
		*d = bytes.Clone(raw)
		return nil
	}
	if k != kindJSON {
		return fmt.Errorf("pgcache: decode: stored value is raw bytes; read it into *[]byte, not %T", dst)
	}
	return unmarshal(raw, dst)
}

// unmarshal is json.Unmarshal, through the encoding/json/v2 engine with
// encoding/json's semantics (go-json-experiment's v1 API, what encoding/json
// becomes under GOEXPERIMENT=jsonv2): about 5x faster and with a quarter of
// the allocations on a small struct, which is most of a typed MGet's cost.
// A value it refuses is decoded again by encoding/json, so errors keep
// encoding/json's types (*json.UnmarshalTypeError, *json.SyntaxError) and
// a value encoding/json accepts is never refused.
func unmarshal(raw []byte, dst any) error {
	if jsonv1.Unmarshal(raw, dst) == nil {
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("pgcache: decode: %w", err)
	}
	return nil
}

// decodeAny returns a JSON value as encoding/json decodes into any with
// UseNumber (numbers as json.Number, so integers above 2^53 survive), and
// raw bytes as []byte.
func decodeAny(raw []byte, k kind) (any, error) {
	if k == kindBytes {
		return bytes.Clone(raw), nil
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("pgcache: decode: %w", err)
	}
	if d.More() {
		return nil, fmt.Errorf("pgcache: decode: data after the JSON value")
	}
	return v, nil
}

// truthy applies JavaScript truthiness to a stored value, as NocoBase's
// wrapWithCondition does: JSON null, false, 0 and "" are falsy; objects and
// arrays (even empty) are truthy; raw bytes are truthy when not empty.
func truthy(e encoded) bool {
	if e.kind == kindBytes {
		return len(e.raw) > 0
	}
	s := e.raw
	switch {
	case len(s) == 0:
		return false
	case string(s) == "null", string(s) == "false", string(s) == `""`:
		return false
	case s[0] == '-' || (s[0] >= '0' && s[0] <= '9'):
		var f float64
		if err := json.Unmarshal(s, &f); err != nil {
			return true
		}
		return f != 0
	}
	return true
}

// validateKey checks one key.
// validatePattern refuses a Keys pattern that PostgreSQL text cannot hold, so
// that it fails with ErrInvalidKey on every store instead of an SQL error.
func validatePattern(pattern string) error {
	switch {
	case !utf8.ValidString(pattern):
		return fmt.Errorf("%w: pattern %q is not valid UTF-8", ErrInvalidKey, pattern)
	case strings.IndexByte(pattern, 0) >= 0:
		return fmt.Errorf("%w: pattern %q contains a NUL byte", ErrInvalidKey, pattern)
	}
	return nil
}

func validateKey(key string) error {
	switch {
	case key == "":
		return ErrEmptyKey
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidKey, len(key), MaxKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidKey, key)
	case strings.IndexByte(key, 0) >= 0:
		return fmt.Errorf("%w: %q contains a NUL byte", ErrInvalidKey, key)
	}
	return nil
}
