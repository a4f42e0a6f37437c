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
	out := make([]*T, len(keys))
	dst := make([]T, len(keys)) // one allocation for every value
	err := c.mgetEach(ctx, keys, func(i int, e encoded) error {
		if err := decodeInto(e.raw, e.kind, &dst[i]); err != nil {
			return err
		}
		out[i] = &dst[i]
		return nil
	})
	if err != nil {
		return nil, err
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
