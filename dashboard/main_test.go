package dashboard_test

import (
	"testing"

	"github.com/pgcoord/pgcoord/pgcoordtest"
)

func TestMain(m *testing.M) { pgcoordtest.Main(m) }
