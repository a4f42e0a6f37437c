package listen

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// snapshot is a PostgreSQL snapshot (pg_snapshot): every transaction below
// xmax that is not in xip had ended when it was taken.
type snapshot struct {
	xmin, xmax uint64
	xip        []uint64 // sorted
}

// parseSnapshot parses pg_snapshot's text form "xmin:xmax:xip,xip,...".
func parseSnapshot(s string) (snapshot, error) {
	var sn snapshot
	f := strings.Split(s, ":")
	if len(f) != 3 {
		return sn, errors.New("malformed snapshot")
	}
	var err error
	if sn.xmin, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return sn, errors.New("malformed snapshot")
	}
	if sn.xmax, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return sn, errors.New("malformed snapshot")
	}
	if f[2] != "" {
		for _, x := range strings.Split(f[2], ",") {
			v, err := strconv.ParseUint(x, 10, 64)
			if err != nil {
				return sn, errors.New("malformed snapshot")
			}
			sn.xip = append(sn.xip, v)
		}
		slices.Sort(sn.xip)
	}
	return sn, nil
}

// ended reports whether transaction x had ended (committed or aborted) when
// the snapshot was taken.
func (s snapshot) ended(x uint64) bool {
	if x >= s.xmax {
		return false
	}
	_, in := slices.BinarySearch(s.xip, x)
	return !in
}

// xipFrom returns the xip entries not below from, as decimal strings (a
// text[] parameter).
func (s snapshot) xipFrom(from uint64) []string {
	out := make([]string, 0, len(s.xip))
	for _, x := range s.xip {
		if x >= from {
			out = append(out, strconv.FormatUint(x, 10))
		}
	}
	return out
}

// ledger is the exactly-once state of one PubSub: which messages were
// dispatched, whichever path (notification, catch-up, local after-commit)
// found them.
//
// Invariant: every committed message of the app whose transaction had ended
// in snap (snap.ended) has been dispatched, or deliberately skipped (published
// before the first Start, or not addressed to this instance); delivered holds
// the id → xid of every other dispatched message. A catch-up therefore reads
// only the rows of transactions that had not ended in snap: those at or
// above snap.xmax and those in snap.xip, however old snap.xmin is (a long
// transaction anywhere on the server holds xmin back, not xmax). When a
// catch-up that started with snapshot p has read everything, snap becomes p
// and the ids p settles leave delivered.
type ledger struct {
	mu        sync.Mutex
	snap      snapshot
	delivered map[int64]uint64

	// serverID is the system_identifier of the server snap came from;
	// lastRead the database time of the latest complete catch-up there.
	// switching is set while the catch-up after a switchover (from
	// switchSince) has not finished: snap is then empty.
	serverID    int64
	lastRead    time.Time
	switching   bool
	switchSince time.Time

	// last is the highest (xid, id) of the log rows the ledger has seen
	// (claimed, or the newest row of the log at begin), if hasLast. Its
	// row still being there after a server restart proves that the WAL up
	// to its commit survived, so the server hands out no transaction id up
	// to last's again (see rewind). startedAt is the server's
	// pg_postmaster_start_time at the latest connection.
	lastXid   uint64
	lastID    int64
	hasLast   bool
	startedAt time.Time
}

func newLedger() *ledger { return &ledger{delivered: map[int64]uint64{}} }

// seenLocked reports whether the message was dispatched or skipped already.
func (l *ledger) seenLocked(id int64, xid uint64) bool {
	if l.snap.ended(xid) {
		return true
	}
	_, ok := l.delivered[id]
	return ok
}

func (l *ledger) seen(id int64, xid uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seenLocked(id, xid)
}

// claimLocked records the message as dispatched; false when it already was.
func (l *ledger) claimLocked(id int64, xid uint64) bool {
	if l.seenLocked(id, xid) {
		return false
	}
	l.delivered[id] = xid
	l.noteLocked(id, xid)
	return true
}

// noteLocked raises last to (xid, id).
func (l *ledger) noteLocked(id int64, xid uint64) {
	if !l.hasLast || xid > l.lastXid || (xid == l.lastXid && id > l.lastID) {
		l.lastXid, l.lastID, l.hasLast = xid, id, true
	}
}

// claimEach calls fn, under the ledger's lock, for each message of envs
// not dispatched before, after recording it as dispatched.
func (l *ledger) claimEach(envs []envelope, fn func(*envelope)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range envs {
		if l.claimLocked(envs[i].msg.ID, envs[i].xid) {
			fn(&envs[i])
		}
	}
}

// claimUnwanted records the rows not dispatched before whose channel is
// unwanted as dispatched, and returns the ids of the other rows not
// dispatched before.
func (l *ledger) claimUnwanted(rows []logRow, unwanted func(channel string) bool) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var want []int64
	for _, r := range rows {
		switch {
		case l.seenLocked(r.id, r.xid):
		case unwanted(r.channel):
			l.claimLocked(r.id, r.xid)
		default:
			want = append(want, r.id)
		}
	}
	return want
}

// begin sets the ledger to a first snapshot (Start): what had ended then is
// never delivered. newest holds the log's newest row then, if any.
func (l *ledger) begin(p snapshot, serverID int64, at time.Time, newest []logRow) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.snap, l.serverID, l.lastRead = p, serverID, at
	clear(l.delivered)
	l.hasLast = false
	for _, r := range newest {
		l.noteLocked(r.id, r.xid)
	}
}

// last returns the last row seen, if any.
func (l *ledger) last() (id int64, xid uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastID, l.lastXid, l.hasLast
}

// restarted records the server's start time at a new connection and
// reports whether it differs from the previous connection's (a restart,
// a crash, a failover).
func (l *ledger) restarted(startedAt time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	changed := !l.startedAt.IsZero() && !startedAt.Equal(l.startedAt)
	l.startedAt = startedAt
	return changed
}

// rewind lowers the snapshot to the last row seen, after a server restart
// that kept that row: the transactions after its commit may have been lost
// (a crash loses the commits not yet flushed, such as autocommit
// Publishes), and the server then hands out their transaction ids, and
// message ids above last's, again. Those are read again; the ids delivered
// that the server may hand out again are forgotten.
func (l *ledger) rewind() {
	l.mu.Lock()
	defer l.mu.Unlock()
	top := l.lastXid + 1
	if !l.hasLast {
		top = 0
	}
	if top < l.snap.xmax {
		l.snap.xmax = top
		l.snap.xmin = min(l.snap.xmin, top)
		l.snap.xip = slices.DeleteFunc(slices.Clone(l.snap.xip), func(x uint64) bool { return x >= top })
	}
	for id := range l.delivered {
		if !l.hasLast || id > l.lastID {
			delete(l.delivered, id)
		}
	}
}

// complete records a catch-up that started with snapshot p and has read
// every row p and the previous snapshot left open.
func (l *ledger) complete(p snapshot, serverID int64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.snap, l.serverID, l.lastRead, l.switching = p, serverID, at, false
	for id, x := range l.delivered {
		if p.ended(x) {
			delete(l.delivered, id)
		}
	}
}

// startSwitch empties the ledger for a switchover (unless a previous one is
// still unfinished) and returns the time from which the new server's
// messages are delivered.
func (l *ledger) startSwitch(margin time.Duration) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.switching {
		l.switching = true
		l.switchSince = l.lastRead.Add(-margin)
		l.snap = snapshot{}
		clear(l.delivered)
		l.hasLast = false
	}
	return l.switchSince
}

// state returns what a new catch-up starts from.
func (l *ledger) state() (snap snapshot, serverID int64, switching bool, since time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snap, l.serverID, l.switching, l.switchSince
}

// readAt returns the database time of the latest complete catch-up.
func (l *ledger) readAt() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastRead
}

// size returns the number of ids kept (for tests and stats).
func (l *ledger) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.delivered)
}

// shiftXmax moves the snapshot's xmax by d (tests: as if transaction ids
// had gone back).
func (l *ledger) shiftXmax(d uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.snap.xmax += d
}

// snapEnded reports whether the ledger's snapshot had seen x end.
func (l *ledger) snapEnded(x uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snap.ended(x)
}
