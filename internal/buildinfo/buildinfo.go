// Package buildinfo reports the version of pgcoord compiled into the binary.
package buildinfo

import "runtime/debug"

// ModulePath is pgcoord's module, looked up in the build information.
const ModulePath = "github.com/pgcoord/pgcoord"

// Version returns pgcoord's module version from the build information: a tag
// (v0.4.1) when built with `go install …@version` or as a dependency, a
// pseudo-version, "(devel)" from a checkout, or "(unknown)".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	if bi.Main.Path == ModulePath && bi.Main.Version != "" {
		return bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == ModulePath {
			return d.Version
		}
	}
	if bi.Main.Path == ModulePath {
		return "(devel)"
	}
	return "(unknown)"
}
