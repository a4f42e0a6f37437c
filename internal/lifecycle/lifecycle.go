// Package lifecycle is the one start/stop contract of pgcoord's long-lived
// components (listen.PubSub and SyncMessages, pgcache.Manager,
// queue.EventQueue, advisorylock.Manager, app.App):
//
//   - Start a second time (while starting or started) fails with an error
//     that Is [ErrAlreadyStarted];
//   - Stop (or Close) is safe to call twice and before Start;
//   - Start after Stop fails with an error that Is [ErrClosed], and so does
//     every other call of the component;
//   - a Start that fails leaves the component as new: Start may be retried.
//
// A component keeps a [State] and brackets its Start with [State.BeginStart]
// and [State.EndStart], its Stop with [State.BeginStop]. Each package exports
// its own sentinels, made with [Closed] and [AlreadyStarted], so its errors
// read "listen: closed" yet errors.Is matches the shared ones (app.ErrClosed
// re-exports [ErrClosed]). The model is River's rivershared/startstop.
package lifecycle

import (
	"errors"
	"sync"
	"sync/atomic"
)

// ErrClosed is what every package's ErrClosed is (errors.Is): the component
// was stopped or closed.
var ErrClosed = errors.New("pgcoord: closed")

// ErrAlreadyStarted is what every package's ErrAlreadyStarted is
// (errors.Is): Start was called on a component that is starting or started.
var ErrAlreadyStarted = errors.New("pgcoord: already started")

// sentinel is a package's own error value that Is a shared one.
type sentinel struct {
	msg  string
	base error
}

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Unwrap() error { return e.base }

// Closed returns a package's ErrClosed: it reads msg and Is [ErrClosed].
func Closed(msg string) error { return &sentinel{msg: msg, base: ErrClosed} }

// AlreadyStarted returns a package's ErrAlreadyStarted: it reads msg and Is
// [ErrAlreadyStarted].
func AlreadyStarted(msg string) error { return &sentinel{msg: msg, base: ErrAlreadyStarted} }

const (
	phaseNew int32 = iota
	phaseStarting
	phaseStarted
	phaseStopped
)

// State is a component's place in its lifecycle. The zero value is new.
// Its methods are safe for concurrent use.
type State struct {
	mu sync.Mutex // serialises the transitions; reads of phase need no lock
	// phase is written under mu only.
	phase atomic.Int32
	// closed and alreadyStarted are the package's sentinels; nil means the
	// shared ones.
	closed, alreadyStarted error
}

// Errors sets the package sentinels BeginStart and EndStart return. Call it
// before any other method.
func (s *State) Errors(closed, alreadyStarted error) {
	s.closed, s.alreadyStarted = closed, alreadyStarted
}

func (s *State) errClosed() error {
	if s.closed != nil {
		return s.closed
	}
	return ErrClosed
}

// BeginStart moves a new component to starting. It returns the package's
// ErrAlreadyStarted when the component is starting or started, its ErrClosed
// once Stop has begun. On nil the caller starts and then calls EndStart.
func (s *State) BeginStart() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.phase.Load() {
	case phaseStopped:
		return s.errClosed()
	case phaseStarting, phaseStarted:
		if s.alreadyStarted != nil {
			return s.alreadyStarted
		}
		return ErrAlreadyStarted
	}
	s.phase.Store(phaseStarting)
	return nil
}

// EndStart ends a Start begun with BeginStart. When err is not nil the
// component is new again and err is returned. When Stop began meanwhile the
// component stays stopped and EndStart returns ErrClosed: the caller undoes
// what its Start did. Otherwise the component is started and started (when
// not nil) runs before EndStart returns, under the state's lock, so a Stop
// that follows sees whatever it set up (its goroutines, cancel functions).
func (s *State) EndStart(err error, started func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.phase.Load() == phaseStopped:
		if err != nil {
			return err
		}
		return s.errClosed()
	case err != nil:
		s.phase.Store(phaseNew)
		return err
	}
	s.phase.Store(phaseStarted)
	if started != nil {
		started()
	}
	return nil
}

// BeginStop moves the component to stopped. first is false when Stop had
// already begun (the caller returns nil: Stop is safe twice); wasStarted
// reports whether Start had finished, so there is something to stop. A Start
// still in progress finds out in EndStart and undoes itself.
func (s *State) BeginStop() (first, wasStarted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.phase.Load()
	if p == phaseStopped {
		return false, false
	}
	s.phase.Store(phaseStopped)
	wasStarted = p == phaseStarted
	return true, wasStarted
}

// Started reports whether Start finished and Stop has not begun. It takes no
// lock.
func (s *State) Started() bool { return s.phase.Load() == phaseStarted }

// Stopped reports whether Stop has begun. It takes no lock: hot paths call it.
func (s *State) Stopped() bool { return s.phase.Load() == phaseStopped }
