package lifecycle

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestState walks every transition of State.
func TestState(t *testing.T) {
	t.Parallel()
	closed, already := Closed("x: closed"), AlreadyStarted("x: already started")
	require.ErrorIs(t, closed, ErrClosed)
	require.ErrorIs(t, already, ErrAlreadyStarted)
	require.Equal(t, "x: closed", closed.Error())
	boom := errors.New("boom")

	steps := map[string]func(t *testing.T, s *State){
		"start twice": func(t *testing.T, s *State) {
			require.NoError(t, s.BeginStart())
			require.ErrorIs(t, s.BeginStart(), already, "while starting")
			ran := false
			require.NoError(t, s.EndStart(nil, func() { ran = true }))
			require.True(t, ran)
			require.True(t, s.Started())
			require.ErrorIs(t, s.BeginStart(), already, "when started")
			first, wasStarted := s.BeginStop()
			require.True(t, first)
			require.True(t, wasStarted)
		},
		"stop before start": func(t *testing.T, s *State) {
			first, wasStarted := s.BeginStop()
			require.True(t, first)
			require.False(t, wasStarted)
			require.ErrorIs(t, s.BeginStart(), closed)
		},
		"failed start may be retried": func(t *testing.T, s *State) {
			require.NoError(t, s.BeginStart())
			require.ErrorIs(t, s.EndStart(boom, func() { t.Fatal("started ran") }), boom)
			require.False(t, s.Started())
			require.NoError(t, s.BeginStart())
			require.NoError(t, s.EndStart(nil, nil))
		},
		"stop while starting": func(t *testing.T, s *State) {
			require.NoError(t, s.BeginStart())
			first, wasStarted := s.BeginStop()
			require.True(t, first)
			require.False(t, wasStarted)
			require.ErrorIs(t, s.EndStart(nil, func() { t.Fatal("started ran") }), closed)
			require.ErrorIs(t, s.EndStart(boom, nil), boom, "a failed start keeps its error")
		},
	}
	for name, run := range steps {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var s State
			s.Errors(closed, already)
			run(t, &s)
			s.BeginStop()
			first, _ := s.BeginStop()
			require.False(t, first, "stop twice")
			require.True(t, s.Stopped())
		})
	}
}
