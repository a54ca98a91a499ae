package profile

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// ErrSystemMap is wrapped by errors about a malformed System.map.
var ErrSystemMap = errors.New("malformed System.map")

// Bounds on System.map input.
const (
	// MaxSystemMapLine bounds one line; real lines are under 200 bytes.
	MaxSystemMapLine = 4096
	// MaxSystemMapSymbols bounds the number of symbols.
	MaxSystemMapSymbols = 1 << 22
)

// ParseSystemMap reads a System.map ("address type name" per line, as nm
// prints it) into a map from symbol name to link-time address. As in the
// kernel's own tables, a global symbol wins over a local one of the same
// name, and otherwise the first one wins.
func ParseSystemMap(r io.Reader) (map[string]uint64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), MaxSystemMapLine)
	syms := map[string]uint64{}
	global := map[string]bool{}
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		f := strings.Fields(text)
		// Module symbols in /proc/kallsyms carry a fourth "[module]"
		// field; System.map has three.
		if len(f) != 3 && !(len(f) == 4 && strings.HasPrefix(f[3], "[")) {
			return nil, fmt.Errorf("line %d: %d fields, want 3: %w", line, len(f), ErrSystemMap)
		}
		addr, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: address %q: %w", line, f[0], ErrSystemMap)
		}
		if len(f[1]) != 1 {
			return nil, fmt.Errorf("line %d: type %q: %w", line, f[1], ErrSystemMap)
		}
		isGlobal := f[1][0] >= 'A' && f[1][0] <= 'Z'
		name := f[2]
		if _, seen := syms[name]; seen && (global[name] || !isGlobal) {
			continue
		}
		if len(syms) >= MaxSystemMapSymbols {
			return nil, fmt.Errorf("more than %d symbols: %w", MaxSystemMapSymbols, ErrSystemMap)
		}
		syms[name] = addr
		global[name] = isGlobal
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w: %w", line+1, ErrSystemMap, err)
	}
	if len(syms) == 0 {
		return nil, fmt.Errorf("no symbols: %w", ErrSystemMap)
	}
	return syms, nil
}

// LoadSystemMap reads a System.map file.
func LoadSystemMap(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("system map: %w", err)
	}
	defer f.Close()
	syms, err := ParseSystemMap(f)
	if err != nil {
		return nil, fmt.Errorf("system map %s: %w", path, err)
	}
	return syms, nil
}

// OverrideSymbols replaces or adds the given symbols in p, e.g. from a
// System.map that is more complete than the kernel's own kallsyms (which
// omits some local symbols). It returns the number of symbols whose address
// changed, which a caller may log: a System.map of another build changes
// many.
func (p *Profile) OverrideSymbols(syms map[string]uint64) (changed int) {
	if p.Symbols == nil {
		p.Symbols = make(map[string]uint64, len(syms))
	}
	for name, a := range syms {
		if old, ok := p.Symbols[name]; ok && old != a {
			changed++
		}
		p.Symbols[name] = a
	}
	return changed
}

// Override replaces or adds o's symbols and types in p, e.g. from a
// Volatility 3 ISF file that describes the same kernel more completely
// than its BTF and kallsyms. A struct in o replaces p's struct of that
// name as a whole. It returns the number of symbols whose address changed.
func (p *Profile) Override(o *Profile) (changed int) {
	changed = p.OverrideSymbols(o.Symbols)
	if p.Types == nil {
		p.Types = make(map[string]*Struct, len(o.Types))
	}
	for name, s := range o.Types {
		p.Types[name] = s
	}
	return changed
}
