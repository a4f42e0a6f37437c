package instanceid

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	t.Parallel()
	a, b := New(), New()
	if a == b {
		t.Fatalf("two ids are equal: %q", a)
	}
	if want := fmt.Sprintf("-%d-", os.Getpid()); !strings.Contains(a, want) {
		t.Fatalf("id %q lacks the pid part %q", a, want)
	}
	if len(a) > 100 {
		t.Fatalf("id %q longer than 100 bytes", a)
	}
}
