package listen

import (
	"crypto/sha256"
	"encoding/hex"
)

// NotifyChannel returns the physical NOTIFY channel of app's pub/sub in
// schema: every publish of the app wakes listeners on it. A tool that only
// watches (the dashboard's live tail) LISTENs on it and reads the messages
// log; the notification's payload format is internal.
func NotifyChannel(schema, app string) string {
	sum := channelSum(schema, app)
	return "pgcoord_" + hex.EncodeToString(sum[:12])
}

// channelSum is the digest the physical channel of (schema, app) derives
// from.
func channelSum(schema, app string) [32]byte {
	return sha256.Sum256([]byte("pgcoord.listen\x00" + schema + "\x00" + app))
}
