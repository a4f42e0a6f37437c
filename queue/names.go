package queue

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// maxQueueNameLen is River's limit on queue names.
const maxQueueNameLen = 64

// queueName maps (app, channel, shared) to a River queue name. River accepts
// `^[a-z0-9]+([_|-]?[a-z0-9]+)*$` up to 64 bytes; channels are arbitrary
// strings, so the name is a readable, sanitized prefix followed by 16 hex
// digits of SHA-256 over the exact identity. The hash makes the mapping
// collision-free in practice (two channels that sanitize alike still differ)
// and stable across versions and instances; the prefix only helps humans
// reading river_job. A shared channel leaves the app out of both parts, as
// NocoBase's getFullChannel does.
func queueName(app, channel string, shared bool) string {
	h := sha256.New()
	readable := channel
	if shared {
		h.Write([]byte("shared\x00"))
	} else {
		h.Write([]byte("app\x00" + app + "\x00"))
		readable = app + "_" + channel
	}
	h.Write([]byte(channel))
	sum := hex.EncodeToString(h.Sum(nil))[:16]

	prefix := sanitize(readable, maxQueueNameLen-len(sum)-1)
	if prefix == "" {
		return sum
	}
	return prefix + "_" + sum
}

// sanitize lowercases s, turns every run of other bytes into one underscore,
// trims underscores at both ends, and cuts to at most max bytes.
func sanitize(s string, max int) string {
	var b strings.Builder
	pendingSep := false
	for _, r := range strings.ToLower(s) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			if pendingSep && b.Len() > 0 {
				if b.Len()+1 >= max {
					break
				}
				b.WriteByte('_')
			}
			pendingSep = false
			if b.Len() >= max {
				break
			}
			b.WriteRune(r)
			continue
		}
		pendingSep = true
	}
	return b.String()
}
