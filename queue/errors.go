package queue

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pgcoord/pgcoord/internal/lifecycle"
)

var (
	// ErrClosed is returned by every call made after [EventQueue.Stop].
	// It Is the ErrClosed of every pgcoord package (app.ErrClosed).
	ErrClosed = lifecycle.Closed("queue: event queue stopped")

	// ErrAlreadyStarted is returned by [EventQueue.Start] when called a
	// second time. It Is the ErrAlreadyStarted of every pgcoord package.
	ErrAlreadyStarted = lifecycle.AlreadyStarted("queue: already started")

	// ErrEmptyChannel is returned when a channel name is empty.
	ErrEmptyChannel = errors.New("queue: empty channel name")

	// ErrInvalidChannel is returned (wrapped) when a channel name holds a NUL
	// byte or invalid UTF-8: it could not round-trip through River's job
	// arguments.
	ErrInvalidChannel = errors.New("queue: invalid channel name")

	// ErrAlreadySubscribed is returned by [EventQueue.Subscribe] when this
	// instance already consumes the channel. The first subscription stays.
	ErrAlreadySubscribed = errors.New("queue: channel already subscribed")

	// ErrNotSubscribed is returned by [EventQueue.Unsubscribe] for a channel this
	// instance does not consume.
	ErrNotSubscribed = errors.New("queue: channel not subscribed")

	// ErrInvalidPayload is returned (wrapped) when a payload cannot be encoded
	// as JSON, or a [json.RawMessage] payload is not valid JSON.
	ErrInvalidPayload = errors.New("queue: invalid payload")

	// ErrPayloadTooLarge is returned when an encoded payload is larger than
	// Config.MaxPayloadBytes.
	ErrPayloadTooLarge = errors.New("queue: payload too large")

	// ErrInvalidOptions is returned (wrapped, naming the field) when a
	// [Consumer], [PublishOpts] or [Config] field is out of range.
	ErrInvalidOptions = errors.New("queue: invalid options")

	// ErrInstanceIDInUse is returned by [EventQueue.Start] when a running
	// instance already uses Config.InstanceID: River records the id as the
	// owner of each attempt, and rescue decides by the owner's liveness.
	ErrInstanceIDInUse = errors.New("queue: instance id in use by a running instance")

	// ErrLivenessLost is the cause (context.Cause) of a Process ctx
	// cancelled because this instance's liveness session stayed lost for
	// [CancelAfterLoss]: other instances may soon see this instance dead
	// and run the message again. The message goes back to the queue,
	// uncharged, unless it was handed to another instance meanwhile.
	ErrLivenessLost = errors.New("queue: liveness session lost; the message may run elsewhere")

	// ErrNotFound is returned by [EventQueue.Cancel] when no message has the id
	// (it never existed, or it was finished and cleaned up).
	ErrNotFound = errors.New("queue: message not found")
)

// validateChannel checks a channel name before it reaches River.
func validateChannel(channel string) error {
	switch {
	case channel == "":
		return ErrEmptyChannel
	case !utf8.ValidString(channel):
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidChannel, channel)
	case strings.IndexByte(channel, 0) >= 0:
		return fmt.Errorf("%w: %q contains a NUL byte", ErrInvalidChannel, channel)
	}
	return nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
}

// PanicError is the error recorded for an attempt whose Process panicked.
type PanicError struct {
	// Value is what Process panicked with.
	Value any
	// Stack is the goroutine's stack at the panic.
	Stack string
}

func (e *PanicError) Error() string { return fmt.Sprintf("queue: process panicked: %v", e.Value) }
