package listen

import (
	"errors"

	"github.com/pgcoord/pgcoord/internal/lifecycle"
)

// ErrClosed is returned by every call on a [PubSub] or [SyncMessages] after
// Close. It Is the ErrClosed of every pgcoord package (app.ErrClosed).
var ErrClosed = lifecycle.Closed("listen: closed")

// ErrPayloadTooLarge is returned (wrapped) by Publish and PublishTx when the
// JSON encoding of a payload is larger than [Config.MaxPayloadBytes]. Nothing
// is written or sent.
var ErrPayloadTooLarge = errors.New("listen: payload too large")

// ErrInvalidChannel is returned (wrapped) for a logical channel name that is
// empty, is not valid UTF-8, or contains a NUL byte (PostgreSQL text cannot
// hold one). Any other string is a valid channel name.
var ErrInvalidChannel = errors.New("listen: invalid channel name")

// ErrInvalidPayload is returned (wrapped) when a payload cannot be encoded as
// JSON, or when a [json.RawMessage] or []byte payload is not valid UTF-8 JSON.
var ErrInvalidPayload = errors.New("listen: invalid payload")

// ErrAlreadyStarted is returned by [PubSub.Start] when called a second time.
// It Is the ErrAlreadyStarted of every pgcoord package (app.ErrAlreadyStarted).
var ErrAlreadyStarted = lifecycle.AlreadyStarted("listen: already started")
