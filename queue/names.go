package queue

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

// maxQueueNameLen is River's limit on queue names.
const maxQueueNameLen = 64

// riverQueueName is River's rule for queue names (validateQueueName in
// client.go, v0.51.2; "letters and numbers separated by underscores or
// hyphens").
var riverQueueName = regexp.MustCompile(`^[a-z0-9]+(?:[_-][a-z0-9]+)*$`)

// hashedSuffix matches the end of a hashed name: 16 hex digits, alone or
// after an underscore.
var hashedSuffix = regexp.MustCompile(`(?:^|_)[0-9a-f]{16}$`)

// queueName maps (app, channel, shared) to a River queue name, so that
// River's own tools (River UI, its CLI, SQL on river_job) show the channel:
//
//   - a shared channel that is a valid River queue name is the queue name
//     itself ("emails"), unless it holds a hyphen or ends like a hashed name;
//   - an app's channel that is a valid River queue name is "<app>-<channel>"
//     ("main-emails", "main-send_email", "main-a-b"), when the app is a
//     valid River queue name without a hyphen and the result fits in 64
//     bytes;
//   - any other channel (dots, capitals, unicode, too long) is a readable,
//     sanitized prefix and 16 hex digits of SHA-256 over the exact identity
//     ("main_async_task_manager_task_3f0c…").
//
// The mapping is collision-free: a readable app name is split at its first
// hyphen (apps hold none), readable shared names hold no hyphen, and hashed
// names hold no hyphen and end in 16 hex digits, which readable shared
// names do not. It is stable across versions and instances: messages
// queued under a name must be found again. A shared channel leaves the app
// out, as NocoBase's getFullChannel does.
func queueName(app, channel string, shared bool) string {
	if riverQueueName.MatchString(channel) {
		if shared {
			if !strings.Contains(channel, "-") && !hashedSuffix.MatchString(channel) && len(channel) <= maxQueueNameLen {
				return channel
			}
		} else if riverQueueName.MatchString(app) && !strings.Contains(app, "-") && len(app)+1+len(channel) <= maxQueueNameLen {
			return app + "-" + channel
		}
	}
	return hashedQueueName(app, channel, shared)
}

// hashedQueueName is the name of a channel that cannot be read as is (and,
// before migration 12 renamed the others, of every channel).
func hashedQueueName(app, channel string, shared bool) string {
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
