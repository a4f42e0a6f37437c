package pgcache

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"
)

type codecProbe struct {
	ID    int               `json:"id"`
	Name  string            `json:"name"`
	Roles []string          `json:"roles"`
	Attrs map[string]any    `json:"attrs"`
	Next  *codecProbe       `json:"next"`
	Raw   json.RawMessage   `json:"raw"`
	Num   json.Number       `json:"num"`
	Tags  map[string]string `json:"tags,omitempty"`
}

// unmarshal (the v2 engine with encoding/json's semantics) decodes every
// input as encoding/json does: the same value, an error for the same inputs.
func FuzzUnmarshalMatchesEncodingJSON(f *testing.F) {
	for _, s := range []string{
		`{"id":1,"name":"a","roles":["x"],"attrs":{"n":1.5,"b":true,"z":null},"next":{"id":2}}`,
		`{"ID":3,"NAME":"case-insensitive as encoding/json"}`,
		`{"id":"not a number"}`, `{"id":1e400}`, `{"raw":{"a":[1,2]},"num":12345678901234567890}`,
		`{"name":"\ud800"}`, `{"id":1,"id":2}`, `[1,2]`, `null`, `{`, `{"tags":{"a":"b"}} x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var fast, std codecProbe
		errFast := unmarshal(raw, &fast)
		errStd := json.Unmarshal(raw, &std)
		require.Equal(t, errStd == nil, errFast == nil, "error or not, as encoding/json: %v / %v", errStd, errFast)
		if errStd == nil {
			require.Equal(t, std, fast)
		}
	})
}

// A value that does not fit the destination fails with encoding/json's own
// error types, which callers may test for with errors.As.
func TestUnmarshalErrorTypes(t *testing.T) {
	t.Parallel()
	var n int
	err := unmarshal([]byte(`"text"`), &n)
	var typeErr *json.UnmarshalTypeError
	require.True(t, errors.As(err, &typeErr), "%v", err)
	err = unmarshal([]byte(`{"a":`), &n)
	var syntaxErr *json.SyntaxError
	require.True(t, errors.As(err, &syntaxErr), "%v", err)
}
