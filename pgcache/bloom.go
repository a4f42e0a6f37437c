package pgcache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/pgcoord/pgcoord/txhooks"
)

// BloomFilterCacheName is the cache that holds the bloom filters of a
// Manager, as in NocoBase.
const BloomFilterCacheName = "bloom-filter"

// BloomFilterConfig configures CreateBloomFilter.
type BloomFilterConfig struct {
	// Store is StorePostgres or StoreMemory. Defaults to
	// ManagerConfig.DefaultStore.
	Store string
}

// BloomFilter is NocoBase's (experimental) BloomFilter: named filters,
// reserved with an error rate and a capacity, stored as entries of the
// "bloom-filter" cache. On the postgres store every instance shares them and
// additions are atomic (row lock); on the memory store they are per instance.
type BloomFilter struct {
	c *Cache
}

// CreateBloomFilter returns the manager's bloom filters, creating the
// "bloom-filter" cache on first use.
func (m *Manager) CreateBloomFilter(ctx context.Context, cfg *BloomFilterConfig) (*BloomFilter, error) {
	var cc CacheConfig
	cc.Name = BloomFilterCacheName
	if cfg != nil {
		cc.Store = cfg.Store
	}
	c, err := m.CreateCache(ctx, cc)
	if err != nil {
		return nil, err
	}
	return &BloomFilter{c: c}, nil
}

// bloomHeader is the first 12 bytes of a stored filter: bits (uint64) and
// hash count (uint32), big-endian; the bit array follows.
const bloomHeader = 12

// Reserve creates the filter key sized for capacity items at errorRate false
// positives (0 < errorRate < 1). Reserving an existing filter keeps it.
func (b *BloomFilter) Reserve(ctx context.Context, key string, errorRate float64, capacity int) error {
	c := b.c
	if err := c.checkKeys(ctx, key); err != nil {
		return err
	}
	if !(errorRate > 0 && errorRate < 1) || capacity <= 0 {
		return fmt.Errorf("pgcache: reserve %q: need 0 < errorRate < 1 and capacity > 0", key)
	}
	bits := math.Ceil(-float64(capacity) * math.Log(errorRate) / (math.Ln2 * math.Ln2))
	if bits/8+bloomHeader > float64(c.spec.maxValueBytes) {
		return fmt.Errorf("pgcache: reserve %q: %w: %.0f bits", key, ErrValueTooLarge, bits)
	}
	k := max(1, int(math.Round(bits/float64(capacity)*math.Ln2)))
	nbits := uint64(bits)
	raw := make([]byte, bloomHeader+(nbits+7)/8)
	binary.BigEndian.PutUint64(raw, nbits)
	binary.BigEndian.PutUint32(raw[8:], uint32(k))
	e := encoded{raw: raw, kind: kindBytes}
	if c.mem != nil {
		c.mem.compute(key, func(old memEntry, found bool) (memEntry, bool) {
			return memEntry{e: e}, !found
		})
		return nil
	}
	// Through Cache.write like every write: a near cache of the prefix is
	// invalidated (or the write checked that none holds it).
	err := c.write(ctx, []string{key}, false, func(ctx context.Context, q querier) error {
		_, err := q.Exec(ctx, `INSERT INTO `+c.m.sql.table+` (app, prefix, key, kind, value) VALUES ($1, $2, $3, 1, $4)
ON CONFLICT (app, prefix, key) DO NOTHING`, c.m.cfg.AppName, c.spec.prefix, key, raw)
		return err
	})
	if err != nil {
		return opErr("reserve", key, err)
	}
	return nil
}

// positions returns the bit positions of value in a filter of nbits bits
// and k hashes (double hashing over FNV-1a).
func positions(value string, nbits uint64, k int) []int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(value))
	h1 := h.Sum64()
	_, _ = h.Write([]byte{0x9e})
	h2 := h.Sum64() | 1
	out := make([]int64, k)
	for i := range k {
		out[i] = int64((h1+uint64(i)*h2)%nbits) + bloomHeader*8
	}
	return out
}

func parseBloom(raw []byte) (uint64, int, bool) {
	if len(raw) < bloomHeader {
		return 0, 0, false
	}
	n, k := binary.BigEndian.Uint64(raw), int(binary.BigEndian.Uint32(raw[8:]))
	if n == 0 || k == 0 || uint64(len(raw)-bloomHeader)*8 < n {
		return 0, 0, false
	}
	return n, k, true
}

// Add adds value to the filter key. On a filter never reserved it does nothing.
func (b *BloomFilter) Add(ctx context.Context, key, value string) error {
	return b.MAdd(ctx, key, value)
}

// MAdd adds values to the filter key, atomically. On a filter never reserved
// it does nothing.
func (b *BloomFilter) MAdd(ctx context.Context, key string, values ...string) error {
	c := b.c
	if err := c.checkKeys(ctx, key); err != nil {
		return err
	}
	setBits := func(raw []byte) ([]byte, bool) {
		n, k, ok := parseBloom(raw)
		if !ok {
			return nil, false
		}
		out := append([]byte(nil), raw...)
		for _, v := range values {
			for _, p := range positions(v, n, k) {
				// PostgreSQL's set_bit/get_bit numbering: bit p%8 of byte p/8.
				out[p/8] |= 1 << (p % 8)
			}
		}
		return out, true
	}
	if c.mem != nil {
		c.mem.compute(key, func(old memEntry, found bool) (memEntry, bool) {
			if !found || old.e.kind != kindBytes {
				return old, false
			}
			raw, ok := setBits(old.e.raw)
			if !ok {
				return old, false
			}
			return memEntry{e: encoded{raw: raw, kind: kindBytes}, expiresAt: old.expiresAt}, true
		})
		return nil
	}
	// A read-modify-write under the row lock, in a transaction that also
	// carries the near-cache registry check and, when a near cache may hold
	// the prefix, the invalidation (Cache.writeTx, as SetTx).
	keys := []string{key}
	err := txhooks.Run(ctx, c.m.pool, func(ctx context.Context, tx *txhooks.Tx) error {
		return c.writeTx(ctx, tx, keys, false, func(ctx context.Context, q querier) error {
			return bloomAddSQL(ctx, c, q, key, setBits)
		})
	})
	if err != nil {
		return opErr("bloom add", key, err)
	}
	return nil
}

// bloomAddSQL sets the bits of a postgres-stored filter inside q, a transaction.
func bloomAddSQL(ctx context.Context, c *Cache, tx querier, key string, setBits func([]byte) ([]byte, bool)) error {
	var raw []byte
	err := tx.QueryRow(ctx, `SELECT value FROM `+c.m.sql.table+` WHERE app = $1 AND prefix = $2 AND key = $3 AND kind = 1 AND `+notExpired+` FOR UPDATE`,
		c.m.cfg.AppName, c.spec.prefix, key).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	out, ok := setBits(raw)
	if !ok {
		return nil
	}
	_, err = tx.Exec(ctx, `UPDATE `+c.m.sql.table+` SET value = $4, written_at = clock_timestamp() WHERE app = $1 AND prefix = $2 AND key = $3`,
		c.m.cfg.AppName, c.spec.prefix, key, out)
	return err
}

// Exists reports whether value may have been added to the filter key (false
// positives at the reserved rate, no false negatives). A filter never
// reserved reports false.
func (b *BloomFilter) Exists(ctx context.Context, key, value string) (bool, error) {
	c := b.c
	if err := c.checkKeys(ctx, key); err != nil {
		return false, err
	}
	var head []byte
	if c.mem != nil {
		m, ok := c.mem.lookup(key)
		if !ok {
			return false, nil
		}
		head = m.e.raw
	} else {
		err := c.m.pool.QueryRow(ctx, `SELECT substring(value FROM 1 FOR 12) FROM `+c.m.sql.table+` WHERE app = $1 AND prefix = $2 AND key = $3 AND kind = 1 AND `+notExpired,
			c.m.cfg.AppName, c.spec.prefix, key).Scan(&head)
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		if err != nil {
			return false, opErr("bloom exists", key, err)
		}
	}
	n, k, ok := parseBloomHeader(head)
	if !ok {
		return false, nil
	}
	pos := positions(value, n, k)
	if c.mem != nil {
		if _, _, ok := parseBloom(head); !ok {
			return false, nil
		}
		for _, p := range pos {
			if head[p/8]&(1<<(p%8)) == 0 {
				return false, nil
			}
		}
		return true, nil
	}
	var all bool
	err := c.m.pool.QueryRow(ctx, `SELECT COALESCE(bool_and(get_bit(value, p) = 1), false) FROM `+c.m.sql.table+`, unnest($4::bigint[]) AS p
WHERE app = $1 AND prefix = $2 AND key = $3 AND kind = 1 AND `+notExpired+` AND length(value)::bigint * 8 >= $5`,
		c.m.cfg.AppName, c.spec.prefix, key, pos, int64(n)+bloomHeader*8).Scan(&all)
	if err != nil {
		return false, opErr("bloom exists", key, err)
	}
	return all, nil
}

func parseBloomHeader(head []byte) (uint64, int, bool) {
	if len(head) < bloomHeader {
		return 0, 0, false
	}
	n, k := binary.BigEndian.Uint64(head), int(binary.BigEndian.Uint32(head[8:]))
	return n, k, n > 0 && k > 0
}
