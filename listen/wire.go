package listen

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// The wire format of the app's notifications. This file owns it: encoding
// (the Go part and the SQL fragments that add what only the database knows,
// the row's id, xid and time) and decoding.
//
// A notification payload is one of:
//
//	W                                 wake-up: read the log (a catch-up)
//	R<id>,<xid>                       one message, to be read from the log by id
//	I<head>,<sender_len>,<channel_len>:<sender><channel><payload>
//	                                  one message inline (version 1)
//	B<sender_len>:<sender>{<head>,<channel_len>,<payload_len>:<channel><payload>}
//	                                  several messages of one sender inline (version 1)
//	M<sender_len>:<sender>{<head>,<channel_len>,<headers_len>,<payload_len>:<channel><headers><payload>}
//	                                  several (or one) messages of one sender
//	                                  inline, with headers (version 2)
//
// where <head> is <id>,<xid>,<unix_micros>,<flags> (flags: 1 skip self, 2
// only self) and every length is in bytes. <headers> is empty or a JSON
// object of string values (metadata such as W3C trace context).
//
// Compatibility: a listener treats a kind it does not know (or an empty
// payload) as a wake-up, so a newer publisher's notifications reach it
// through the log, delayed by at most a catch-up, never lost. Listeners
// before version 2 ignore unknown kinds and read those messages at their
// next poll. A publisher therefore sends version 1 kinds unless a message
// carries headers. Rows in the log carry the same headers (the messages
// table's headers column, NULL when there are none, schema version 15): a
// message found by a catch-up or by id has them too.
const (
	kindWake   = 'W'
	kindRef    = 'R'
	kindInline = 'I'
	kindBatch  = 'B'
	kindMulti  = 'M'
)

// inlineLimit is the largest notification payload sent inline; PostgreSQL's
// limit is 8000 bytes and the head takes up to about 100 more.
const inlineLimit = 7800

// Encoding, SQL side: sqlHead is <id>,<xid>,<unix_micros>, of the row the
// statement inserted (columns id, xid, published_at); the Go side writes
// the rest (see inlineRest, entryRest). sqlRef is the by-id notification.
const (
	sqlHead = `id || ',' || xid || ',' || (extract(epoch FROM published_at) * 1000000)::bigint || ','`
	sqlRef  = `'R' || id || ',' || xid`
)

// head is the Go form of sqlHead (for tests and for checks of the SQL).
func head(id int64, xid uint64, at time.Time) string {
	return strconv.FormatInt(id, 10) + "," + strconv.FormatUint(xid, 10) + "," + strconv.FormatInt(at.UnixMicro(), 10) + ","
}

func flagsOf(skipSelf, onlySelf bool) int {
	f := 0
	if skipSelf {
		f |= 1
	}
	if onlySelf {
		f |= 2
	}
	return f
}

// wireOut is what a publisher sends of one message.
type wireOut struct {
	channel            string
	payload            []byte
	headers            map[string]string
	skipSelf, onlySelf bool
}

func (a publishArgs) wire() wireOut {
	return wireOut(a)
}

// encodeHeaders returns headers' wire text: "" when there are none.
func encodeHeaders(h map[string]string) string {
	if len(h) == 0 {
		return ""
	}
	b, _ := json.Marshal(h) // a map[string]string always marshals
	return string(b)
}

// inlineRest is the part of a version 1 inline notification after sqlHead
// ("I" || sqlHead || rest), or "" when the message does not fit or carries
// headers (then it travels in a batch of one, or by id).
func inlineRest(m wireOut, sender string) string {
	if len(m.headers) > 0 {
		return ""
	}
	h := strconv.Itoa(flagsOf(m.skipSelf, m.onlySelf)) + "," + strconv.Itoa(len(sender)) + "," + strconv.Itoa(len(m.channel)) + ":"
	if len(h)+len(sender)+len(m.channel)+len(m.payload) > inlineLimit {
		return ""
	}
	var sb strings.Builder
	sb.Grow(len(h) + len(sender) + len(m.channel) + len(m.payload))
	sb.WriteString(h)
	sb.WriteString(sender)
	sb.WriteString(m.channel)
	sb.Write(m.payload)
	return sb.String()
}

// batchPrefix is the start of a batch notification: its kind and sender.
func batchPrefix(kind byte, sender string) string {
	return string(kind) + strconv.Itoa(len(sender)) + ":" + sender
}

// entryRest is the part of a batch entry after sqlHead, in the version of
// kind (kindBatch or kindMulti).
func entryRest(kind byte, m wireOut) string {
	f := strconv.Itoa(flagsOf(m.skipSelf, m.onlySelf)) + "," + strconv.Itoa(len(m.channel)) + ","
	if kind == kindBatch {
		return f + strconv.Itoa(len(m.payload)) + ":" + m.channel + string(m.payload)
	}
	h := encodeHeaders(m.headers)
	return f + strconv.Itoa(len(h)) + "," + strconv.Itoa(len(m.payload)) + ":" + m.channel + h + string(m.payload)
}

// batchKind is the kind of a batch of ms: version 1 unless one carries
// headers.
func batchKind(ms []wireOut) byte {
	for _, m := range ms {
		if len(m.headers) > 0 {
			return kindMulti
		}
	}
	return kindBatch
}

// entryOverhead bounds the length of sqlHead's text (id, xid, time).
const entryOverhead = 60

// Decoding.

// notification is a decoded notification payload.
type notification struct {
	kind byte // kindWake, kindRef, or kindInline for messages carried inline
	id   int64
	xid  uint64
	envs []envelope
}

var errMalformed = errors.New("malformed notification")

// decodeNotification decodes a payload of the app's channel. Unknown kinds
// and an empty payload are wake-ups.
func decodeNotification(p string) (notification, error) {
	if p == "" {
		return notification{kind: kindWake}, nil
	}
	switch p[0] {
	case kindRef:
		id, xid, err := parseRef(p[1:])
		return notification{kind: kindRef, id: id, xid: xid}, err
	case kindInline:
		env, err := parseInline(p[1:])
		if err != nil {
			return notification{}, err
		}
		return notification{kind: kindInline, envs: []envelope{env}}, nil
	case kindBatch, kindMulti:
		envs, err := parseBatch(p[0], p[1:])
		if err != nil {
			return notification{}, err
		}
		return notification{kind: kindInline, envs: envs}, nil
	default:
		return notification{kind: kindWake}, nil
	}
}

// isWake reports whether a payload is a wake-up (see decodeNotification).
func isWake(p string) bool {
	return p == "" || !strings.ContainsRune("RIBM", rune(p[0]))
}

// parseHead parses "<id>,<xid>,<unix_micros>,<flags>,<len>..." with n
// lengths, checking that they fit in rest (the text after the head).
func parseHead(h, rest string, n int) (envelope, []int, error) {
	var env envelope
	f := strings.Split(h, ",")
	if len(f) != 4+n {
		return env, nil, errMalformed
	}
	id, err1 := strconv.ParseInt(f[0], 10, 64)
	xid, err2 := strconv.ParseUint(f[1], 10, 64)
	us, err3 := strconv.ParseInt(f[2], 10, 64)
	flags, err4 := strconv.ParseUint(f[3], 10, 8)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return env, nil, errMalformed
	}
	lens := make([]int, n)
	total := 0
	for i := range n {
		v, err := strconv.Atoi(f[4+i])
		if err != nil || v < 0 || v > len(rest)-total {
			return env, nil, errMalformed
		}
		lens[i] = v
		total += v
	}
	env.msg.ID, env.xid = id, xid
	env.msg.PublishedAt = time.UnixMicro(us)
	env.skipSelf, env.onlySelf = flags&1 != 0, flags&2 != 0
	return env, lens, nil
}

// parseInline parses "<head>,<sender_len>,<channel_len>:<sender><channel><payload>".
func parseInline(p string) (envelope, error) {
	colon := strings.IndexByte(p, ':')
	if colon < 0 {
		return envelope{}, errMalformed
	}
	rest := p[colon+1:]
	env, l, err := parseHead(p[:colon], rest, 2)
	if err != nil {
		return envelope{}, err
	}
	env.msg.Sender = rest[:l[0]]
	env.msg.Channel = rest[l[0] : l[0]+l[1]]
	env.msg.Payload = []byte(rest[l[0]+l[1]:])
	return env, nil
}

// parseRef parses "<id>,<xid>".
func parseRef(p string) (int64, uint64, error) {
	idS, xidS, ok := strings.Cut(p, ",")
	if !ok {
		return 0, 0, errMalformed
	}
	id, err := strconv.ParseInt(idS, 10, 64)
	if err != nil {
		return 0, 0, errMalformed
	}
	xid, err := strconv.ParseUint(xidS, 10, 64)
	if err != nil {
		return 0, 0, errMalformed
	}
	return id, xid, nil
}

// parseBatch parses the text after the kind of a batch (kindBatch or
// kindMulti).
func parseBatch(kind byte, p string) ([]envelope, error) {
	colon := strings.IndexByte(p, ':')
	if colon < 0 {
		return nil, errMalformed
	}
	sl, err := strconv.Atoi(p[:colon])
	if err != nil || sl < 0 || sl > len(p)-colon-1 {
		return nil, errMalformed
	}
	sender := p[colon+1 : colon+1+sl]
	p = p[colon+1+sl:]
	n := 2
	if kind == kindMulti {
		n = 3
	}
	var envs []envelope
	for len(p) > 0 {
		colon := strings.IndexByte(p, ':')
		if colon < 0 {
			return nil, errMalformed
		}
		rest := p[colon+1:]
		e, l, err := parseHead(p[:colon], rest, n)
		if err != nil {
			return nil, err
		}
		e.msg.Sender = sender
		e.msg.Channel = rest[:l[0]]
		rest = rest[l[0]:]
		if kind == kindMulti {
			if l[1] > 0 {
				if err := json.Unmarshal([]byte(rest[:l[1]]), &e.headers); err != nil || e.headers == nil {
					return nil, errMalformed
				}
				e.msg.Headers = e.headers
			}
			rest = rest[l[1]:]
		}
		pl := l[n-1]
		if pl > len(rest) {
			return nil, errMalformed
		}
		e.msg.Payload = []byte(rest[:pl])
		envs = append(envs, e)
		p = rest[pl:]
	}
	return envs, nil
}
