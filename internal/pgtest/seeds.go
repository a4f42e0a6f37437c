package pgtest

// HostileNames are the fuzz seeds every test of a user-given name (a lock
// key, a queue channel, a pub/sub channel) starts from: the empty name, SQL
// text, quotes, LIKE/glob metacharacters, a placeholder, a NUL byte, invalid
// UTF-8 and multibyte text. A fuzz test adds its package's own seeds (its
// table names, its length limits) to a fresh copy.
func HostileNames() []string {
	return []string{
		"",
		"'; DROP TABLE pgcoord.cache_entries; --",
		`"quoted" and 'single'`,
		`"; NOTIFY x; --`,
		"%_*?\\",
		"UPPER lower-_|",
		"$1",
		"nul\x00inside",
		"bad\xff\xfeutf8",
		"鍵🔒",
		"キュー.🚀",
	}
}
