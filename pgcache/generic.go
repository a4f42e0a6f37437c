package pgcache

import "context"

// Get returns the value of key decoded into T, and whether it was found.
// T = []byte receives the stored bytes as they are.
func Get[T any](ctx context.Context, c *Cache, key string) (T, bool, error) {
	var v T
	ok, err := c.GetInto(ctx, key, &v)
	if err != nil || !ok {
		var zero T
		return zero, false, err
	}
	return v, true, nil
}

// MGet returns the values of keys decoded into T in one round trip,
// positionally, with nil for a missing or expired key.
func MGet[T any](ctx context.Context, c *Cache, keys ...string) ([]*T, error) {
	vals, found, err := c.mgetEncoded(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make([]*T, len(keys))
	dst := make([]T, len(keys)) // one allocation for every value
	for i := range keys {
		if !found[i] {
			continue
		}
		if err := decodeInto(vals[i].raw, vals[i].kind, &dst[i]); err != nil {
			return nil, err
		}
		out[i] = &dst[i]
	}
	return out, nil
}

// GetValueInObject is the typed form of [Cache.GetValueInObject]: field of
// the JSON object stored under key decoded into T, and whether it was there.
func GetValueInObject[T any](ctx context.Context, c *Cache, key, field string) (T, bool, error) {
	var v T
	ok, err := c.getField(ctx, key, field, &v)
	if err != nil || !ok {
		var zero T
		return zero, false, err
	}
	return v, true, nil
}
