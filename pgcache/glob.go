package pgcache

import "strings"

// globToLike turns a glob pattern into a LIKE pattern with escape character
// '\'. '*' matches any run of characters and '?' one character; '\' escapes
// the next character so "\*" matches a literal '*'. LIKE's own
// metacharacters '%', '_' and '\' in the pattern match themselves. An empty
// pattern matches every key.
func globToLike(pattern string) string {
	if pattern == "" {
		return "%"
	}
	var b strings.Builder
	b.Grow(len(pattern) + 8)
	rs := []rune(pattern)
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; r {
		case '*':
			b.WriteByte('%')
		case '?':
			b.WriteByte('_')
		case '\\':
			if i+1 < len(rs) {
				i++
				writeLikeLiteral(&b, rs[i])
			} else {
				writeLikeLiteral(&b, r)
			}
		default:
			writeLikeLiteral(&b, r)
		}
	}
	return b.String()
}

func writeLikeLiteral(b *strings.Builder, r rune) {
	if r == '%' || r == '_' || r == '\\' {
		b.WriteByte('\\')
	}
	b.WriteRune(r)
}

// globMatch reports whether s matches a glob pattern with the rules of
// globToLike; the memory store uses it.
func globMatch(pattern, s string) bool {
	if pattern == "" {
		return true
	}
	p, t := []rune(pattern), []rune(s)
	// Iterative matcher with single-star backtracking; linear in practice.
	pi, ti := 0, 0
	starP, starT := -1, 0
	for ti < len(t) {
		if pi < len(p) {
			switch c := p[pi]; {
			case c == '*':
				starP, starT = pi, ti
				pi++
				continue
			case c == '?':
				pi++
				ti++
				continue
			case c == '\\' && pi+1 < len(p):
				if p[pi+1] == t[ti] {
					pi += 2
					ti++
					continue
				}
			default:
				if c == t[ti] {
					pi++
					ti++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starT++
		pi, ti = starP+1, starT
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
