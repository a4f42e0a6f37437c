// Package instanceid makes the default identity of a pgcoord instance:
// hostname-pid-random, unique per process start and readable in logs,
// pg_stat_activity and the lock table.
package instanceid

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
)

// New returns "<hostname>-<pid>-<8 hex digits>". The hostname is cut to 60
// bytes so the whole id stays well under the limits of the components that
// store it (River's client id allows 100 bytes).
func New() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return fmt.Sprintf("%.60s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}
