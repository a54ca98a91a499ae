package rules

import (
	"fmt"
	"math/bits"
	"strings"
)

// maxStates bounds the tokens of a compiled pattern: the matcher keeps its
// set of active states in a fixed-size bit set, so matching never
// allocates and costs at most len(path) × maxStates steps.
const maxStates = 256

type stateSet [maxStates / 64]uint64

func (s *stateSet) set(i int)      { s[i>>6] |= 1 << (i & 63) }
func (s *stateSet) has(i int) bool { return s[i>>6]&(1<<(i&63)) != 0 }
func (s *stateSet) empty() bool    { return s[0]|s[1]|s[2]|s[3] == 0 }

type tokKind uint8

const (
	tLit      tokKind = iota // one byte
	tOne                     // ?: one byte other than '/'
	tStar                    // *: any run of bytes other than '/'
	tAny                     // ** at the end or before a non-slash: any run of bytes
	tDirs                    // first state of "**/": empty, or any run ending in '/'
	tDirsMore                // second state of "**/": inside the run
)

type token struct {
	kind tokKind
	b    byte // tLit: the byte (lower case when the glob folds case)
}

// glob is a compiled path pattern, anchored at both ends: "*" matches any
// run of characters within one path segment, "?" one character other than
// '/', and "**" any run of characters across segments ("a/**/b" also
// matches "a/b").
//
// Every other character matches itself. '\' is a separator like '/'
// (Windows paths are written either way), so there is no escape character.
type glob struct {
	src    string
	toks   []token
	prefix string // literal bytes before the first wildcard: a fast reject
	fold   bool
}

// compileGlob compiles pattern; fold makes it match ASCII case-insensitively
// (the pattern is stored lower case).
func compileGlob(pattern string, fold bool) (*glob, error) {
	if pattern == "" {
		return nil, fmt.Errorf("empty pattern")
	}
	p := strings.ReplaceAll(pattern, `\`, "/")
	if fold {
		p = strings.ToLower(p)
	}
	g := &glob{src: pattern, fold: fold}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '*' && i+1 < len(p) && p[i+1] == '*':
			for i+1 < len(p) && p[i+1] == '*' {
				i++
			}
			if i+1 < len(p) && p[i+1] == '/' {
				i++
				g.toks = append(g.toks, token{kind: tDirs}, token{kind: tDirsMore})
			} else {
				g.toks = append(g.toks, token{kind: tAny})
			}
		case c == '*':
			g.toks = append(g.toks, token{kind: tStar})
		case c == '?':
			g.toks = append(g.toks, token{kind: tOne})
		default:
			g.toks = append(g.toks, token{kind: tLit, b: c})
		}
		if len(g.toks) >= maxStates {
			return nil, fmt.Errorf("pattern %q: longer than %d characters", pattern, maxStates-1)
		}
	}
	for _, t := range g.toks {
		if t.kind != tLit {
			break
		}
		g.prefix += string(t.b)
	}
	return g, nil
}

// fold maps a path byte as a folding glob sees it.
func foldByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// match reports whether head+tail (the path as two pieces, so that a
// normalised prefix need not be copied in front of the path) matches the
// whole pattern. '\' in the path is read as '/'. It does not allocate.
func (g *glob) match(head, tail string) bool {
	n := len(head) + len(tail)
	at := func(i int) byte {
		var c byte
		if i < len(head) {
			c = head[i]
		} else {
			c = tail[i-len(head)]
		}
		if c == '\\' {
			c = '/'
		}
		if g.fold {
			c = foldByte(c)
		}
		return c
	}
	if len(g.prefix) > n {
		return false
	}
	for i := 0; i < len(g.prefix); i++ {
		if at(i) != g.prefix[i] {
			return false
		}
	}
	var cur stateSet
	g.enter(&cur, len(g.prefix))
	for i := len(g.prefix); i < n; i++ {
		c := at(i)
		var next stateSet
		for w := range cur {
			for word := cur[w]; word != 0; word &= word - 1 {
				s := w<<6 | bits.TrailingZeros64(word)
				if s == len(g.toks) {
					continue
				}
				t := g.toks[s]
				switch t.kind {
				case tLit:
					if c == t.b {
						g.enter(&next, s+1)
					}
				case tOne:
					if c != '/' {
						g.enter(&next, s+1)
					}
				case tStar:
					if c != '/' {
						g.enter(&next, s)
					}
				case tAny:
					g.enter(&next, s)
				case tDirs, tDirsMore:
					if c == '/' {
						g.enter(&next, s+2-int(t.kind-tDirs))
					}
					next.set(s + 1 - int(t.kind-tDirs))
				}
			}
		}
		if next.empty() {
			return false
		}
		cur = next
	}
	return cur.has(len(g.toks))
}

// enter activates state s and the states reachable from it without input
// (a star may match nothing; "**/" may match nothing).
func (g *glob) enter(set *stateSet, s int) {
	for {
		set.set(s)
		if s == len(g.toks) {
			return
		}
		switch g.toks[s].kind {
		case tStar, tAny:
			s++
		case tDirs:
			s += 2
		default:
			return
		}
	}
}
