package vmlinux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrNoKallsyms is wrapped when a memory region holds no recognisable
// kallsyms tables.
var ErrNoKallsyms = errors.New("kallsyms tables not found")

// Bounds on kallsyms tables. They hold hostile or corrupt input to a cost
// proportional to its size. Distribution kernels have 100k-200k symbols.
const (
	// MaxKallsyms bounds the number of symbols.
	MaxKallsyms = 1 << 21
	// MaxSymbolLen bounds an expanded symbol name, type character
	// included (the kernel's KSYM_NAME_LEN is 512 since 6.1).
	MaxSymbolLen = 512
	// maxTokenTable bounds the size of the token table; real tables are
	// around 1-2 KiB.
	maxTokenTable = 1 << 14
)

// Symbol is one kallsyms entry.
type Symbol struct {
	Name string
	// Addr is the link-time address (before KASLR); per-CPU symbols hold
	// their offset in the per-CPU area.
	Addr uint64
	// Type is nm's type character: 'T'/'t' text, 'D'/'d' data,
	// 'R'/'r' read-only data, 'B'/'b' bss, 'A' absolute...
	Type byte
}

// Global tells whether the symbol is global (upper-case nm type).
func (s Symbol) Global() bool { return s.Type >= 'A' && s.Type <= 'Z' }

// Kallsyms is the kernel's own symbol table, decoded from the compressed
// tables scripts/kallsyms.c links into .rodata.
type Kallsyms struct {
	Symbols []Symbol
	// RelativeBase is kallsyms_relative_base, normally _text; 0 when the
	// kernel stores absolute addresses.
	RelativeBase uint64
	// AbsolutePercpu tells that the table follows
	// CONFIG_KALLSYMS_ABSOLUTE_PERCPU: non-negative offsets are absolute
	// values (per-CPU symbols), negative ones are relative to
	// RelativeBase-1.
	AbsolutePercpu bool
	// TokenTable, Names, Markers and Offsets are the link addresses of
	// the tables, for diagnostics.
	TokenTable, Names, Markers, Offsets uint64
}

// Lookup returns the address of the first global symbol named name, else of
// the first local one.
func (k *Kallsyms) Lookup(name string) (uint64, bool) {
	var local uint64
	found := false
	for _, s := range k.Symbols {
		if s.Name != name {
			continue
		}
		if s.Global() {
			return s.Addr, true
		}
		if !found {
			local, found = s.Addr, true
		}
	}
	return local, found
}

// Map returns the symbols by name. A global symbol wins over a local one of
// the same name (static functions are often duplicated); among equals the
// first wins.
func (k *Kallsyms) Map() map[string]uint64 {
	m := make(map[string]uint64, len(k.Symbols))
	global := make(map[string]bool, len(k.Symbols))
	for _, s := range k.Symbols {
		_, seen := m[s.Name]
		if seen && (global[s.Name] || !s.Global()) {
			continue
		}
		m[s.Name] = s.Addr
		global[s.Name] = s.Global()
	}
	return m
}

// region is a memory region at a link address, with bounds-checked reads.
type region struct {
	b    []byte
	base uint64
}

func (r region) u16(off int) (uint16, bool) {
	if off < 0 || off+2 > len(r.b) {
		return 0, false
	}
	return binary.LittleEndian.Uint16(r.b[off:]), true
}

func (r region) u32(off int) (uint32, bool) {
	if off < 0 || off+4 > len(r.b) {
		return 0, false
	}
	return binary.LittleEndian.Uint32(r.b[off:]), true
}

func (r region) u64(off int) (uint64, bool) {
	if off < 0 || off+8 > len(r.b) {
		return 0, false
	}
	return binary.LittleEndian.Uint64(r.b[off:]), true
}

func (r region) word(off, width int) (uint64, bool) {
	if width == 8 {
		return r.u64(off)
	}
	v, ok := r.u32(off)
	return uint64(v), ok
}

// alignUp aligns a region offset so that its link address is a multiple of
// a (the tables are emitted with .balign).
func (r region) alignUp(off, a int) int {
	va := r.base + uint64(off)
	return off + int((uint64(a)-va%uint64(a))%uint64(a))
}

// tokens is a validated kallsyms_token_table with its index.
type tokens struct {
	table  int // offset of kallsyms_token_table
	index  int // offset of kallsyms_token_index
	end    int // offset just past kallsyms_token_index
	tokens [256]string
}

// ParseKallsyms finds and decodes the kallsyms tables in data, the contents
// of the kernel's .rodata linked at base. It understands the layouts of
// Linux 4.6 through 6.1 (offsets, relative base, count, names, markers,
// token table, token index), of 6.2 and 6.3 and stable kernels with the
// backport (kallsyms_seqs_of_names between markers and token table, as in
// Debian's 6.1), and of 6.4 and later (count, names, markers, token table,
// token index, offsets, relative base), each with absolute or base-relative
// addresses. It returns an error, never panics, on any input; its work is
// linear in len(data) for all but contrived inputs.
func ParseKallsyms(data []byte, base uint64) (*Kallsyms, error) {
	r := region{b: data, base: base}
	var errs []error
	for start := 0; ; {
		t, next, ok := findTokens(r, start)
		if !ok {
			break
		}
		k, err := parseAround(r, t)
		if err == nil {
			return k, nil
		}
		errs = append(errs, fmt.Errorf("token table at %#x: %w", base+uint64(t.table), err))
		if len(errs) > 8 {
			break
		}
		start = next
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no token table in %d bytes at %#x: %w", len(data), base, ErrNoKallsyms)
	}
	return nil, fmt.Errorf("%w: %w", ErrNoKallsyms, errors.Join(errs...))
}

// findTokens scans for a kallsyms_token_index (256 increasing u16 offsets
// starting at 0) whose offsets describe the NUL-terminated strings that end
// right before it: that is the token table. It returns the offset to resume
// scanning from.
func findTokens(r region, start int) (tokens, int, bool) {
	start = r.alignUp(start, 2)
	for i := start; i+512 <= len(r.b); i += 2 {
		// index[0] is 0 and the next offsets ascend: a cheap filter
		// before the full check (rodata is full of zeros).
		if r.b[i] != 0 || r.b[i+1] != 0 {
			continue
		}
		i1 := binary.LittleEndian.Uint16(r.b[i+2:])
		if i1 == 0 || binary.LittleEndian.Uint16(r.b[i+4:]) <= i1 {
			continue
		}
		if t, ok := checkTokens(r, i); ok {
			return t, i + 2, true
		}
	}
	return tokens{}, len(r.b), false
}

func checkTokens(r region, idx int) (tokens, bool) {
	var t tokens
	var index [256]int
	prev := -1
	for k := range 256 {
		v := int(binary.LittleEndian.Uint16(r.b[idx+2*k:]))
		if v <= prev || v >= maxTokenTable {
			return t, false
		}
		index[k] = v
		prev = v
	}
	// Between the table's last NUL and the index there is only alignment
	// padding (zeros), at most 7 bytes.
	z := idx - 1
	for z >= 0 && r.b[z] == 0 && idx-z <= 8 {
		z--
	}
	// z is now the last byte of the last token; its NUL is at z+1.
	if z < 0 || r.b[z] == 0 {
		return t, false
	}
	q := z
	for q >= 0 && r.b[q] != 0 && z-q < MaxSymbolLen {
		q--
	}
	if q < 0 || r.b[q] != 0 {
		return t, false
	}
	table := q + 1 - index[255]
	if table < 0 {
		return t, false
	}
	// Validate without allocating: most candidates fail here.
	var ends [256]int
	for k := range 256 {
		s := table + index[k]
		var e int
		if k < 255 {
			e = table + index[k+1] - 1
		} else {
			e = z + 1
		}
		if e < s || e >= idx || r.b[e] != 0 {
			return t, false
		}
		if k < 255 && bytes.IndexByte(r.b[s:e], 0) >= 0 {
			return t, false
		}
		ends[k] = e
	}
	// Symbol names use digits, so they are their own tokens: a cheap
	// check that this is not some other increasing u16 array.
	for c := '0'; c <= '9'; c++ {
		s := table + index[c]
		if ends[c]-s != 1 || r.b[s] != byte(c) {
			return t, false
		}
	}
	for k := range 256 {
		t.tokens[k] = string(r.b[table+index[k] : ends[k]])
	}
	t.table, t.index, t.end = table, idx, idx+512
	return t, true
}

// parseAround decodes the tables given the token table. The markers end
// right before the token table, or, in kernels with kallsyms_seqs_of_names
// (6.2, 6.3, and stable backports such as Debian's 6.1), before that array
// of 3 bytes per symbol; the names end right before the markers, and the
// symbol count precedes the names.
func parseAround(r region, t tokens) (*Kallsyms, error) {
	var errs []error
	try := func(end, width int, markers []uint64) *Kallsyms {
		k, err := parseNames(r, t, markers, end-width*len(markers))
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		return k
	}
	for _, width := range []int{4, 8} {
		for pad := 0; pad < 8; pad += width {
			end := t.table - pad
			if !zeros(r, end, t.table) {
				continue
			}
			if markers, ok := readMarkers(r, end, width); ok {
				if k := try(end, width, markers); k != nil {
					return k, nil
				}
			}
		}
	}
	// With kallsyms_seqs_of_names: markers end at p, the sequence array
	// starts at p aligned to 8 and holds 3n bytes for n symbols, and the
	// token table starts after it aligned to 8.
	lo := max(t.table-3*MaxKallsyms-16, 0)
	for p := t.table - 8; p >= lo; p-- {
		if (r.base+uint64(p))%4 != 0 {
			continue
		}
		gap := t.table - r.alignUp(p, 8)
		nmin, nmax := max((gap-7+2)/3, 1), gap/3
		if nmax < nmin {
			continue
		}
		for _, width := range []int{4, 8} {
			if (r.base+uint64(p))%uint64(width) != 0 {
				continue
			}
			for m := (nmin + 255) / 256; m <= (nmax+255)/256; m++ {
				markers, ok := readMarkersN(r, p, width, m)
				if !ok {
					continue
				}
				if k := try(p, width, markers); k != nil {
					return k, nil
				}
			}
		}
		if len(errs) > 16 {
			break
		}
	}
	if len(errs) == 0 {
		return nil, errors.New("no kallsyms_markers before the token table")
	}
	return nil, errors.Join(errs...)
}

func zeros(r region, from, to int) bool {
	if from < 0 || to > len(r.b) {
		return false
	}
	for _, c := range r.b[from:to] {
		if c != 0 {
			return false
		}
	}
	return true
}

// readMarkers reads kallsyms_markers backwards from end: offsets into the
// names of every 256th symbol, strictly increasing from 0.
func readMarkers(r region, end, width int) ([]uint64, bool) {
	var rev []uint64
	for p := end - width; p >= 0 && len(rev) <= MaxKallsyms/256+1; p -= width {
		v, ok := r.word(p, width)
		if !ok {
			return nil, false
		}
		if len(rev) > 0 && v >= rev[len(rev)-1] {
			return nil, false
		}
		rev = append(rev, v)
		if v == 0 {
			m := make([]uint64, len(rev))
			for i, x := range rev {
				m[len(rev)-1-i] = x
			}
			return m, true
		}
	}
	return nil, false
}

// readMarkersN reads exactly m markers ending at end: 0 first, then
// strictly increasing. It checks the first and last before the rest, which
// rejects most positions at once.
func readMarkersN(r region, end, width, m int) ([]uint64, bool) {
	start := end - width*m
	if m <= 0 || start < 0 || m > MaxKallsyms/256+1 {
		return nil, false
	}
	if first, ok := r.word(start, width); !ok || first != 0 {
		return nil, false
	}
	if last, ok := r.word(end-width, width); !ok || (m > 1 && last == 0) {
		return nil, false
	}
	markers := make([]uint64, m)
	for i := 1; i < m; i++ {
		v, _ := r.word(start+width*i, width)
		if v <= markers[i-1] {
			return nil, false
		}
		markers[i] = v
	}
	return markers, true
}

// parseNames finds kallsyms_num_syms before the names that end at
// markersAt, decodes the names and then the addresses.
func parseNames(r region, t tokens, markers []uint64, markersAt int) (*Kallsyms, error) {
	m := len(markers)
	last := int(markers[m-1])
	// The names of the last up-to-256 symbols follow the last marker;
	// each takes at most 2+MaxSymbolLen bytes.
	hi := markersAt - last - 4
	lo := max(hi-256*(MaxSymbolLen+2)-16, 0)
	for p := hi; p >= lo; p-- {
		if (r.base+uint64(p))%4 != 0 {
			continue
		}
		n, ok := r.u32(p)
		if !ok || n == 0 || n > MaxKallsyms || (int(n)+255)/256 != m {
			continue
		}
		for _, cw := range []int{4, 8} {
			names := r.alignUp(p+cw, 8)
			if cw == 8 {
				if hiw, _ := r.u32(p + 4); hiw != 0 {
					continue
				}
			}
			syms, ok := decodeNames(r, t, markers, names, markersAt, int(n))
			if !ok {
				continue
			}
			k, err := addresses(r, t, p, int(n), syms)
			if err != nil {
				return nil, fmt.Errorf("%d names at %#x: %w", n, r.base+uint64(names), err)
			}
			k.TokenTable = r.base + uint64(t.table)
			k.Names = r.base + uint64(names)
			k.Markers = r.base + uint64(markersAt)
			return k, nil
		}
	}
	return nil, fmt.Errorf("no kallsyms_num_syms for %d markers at %#x", m, r.base+uint64(markersAt))
}

// decodeNames expands n compressed names starting at off. It checks every
// 256th name against the markers and that the names end at most 7 bytes of
// padding before the markers.
func decodeNames(r region, t tokens, markers []uint64, off, markersAt, n int) ([]Symbol, bool) {
	// Each name takes at least 2 bytes, which bounds the allocation.
	syms := make([]Symbol, 0, min(n, max(markersAt-off, 0)/2))
	p := off
	var buf []byte
	for i := range n {
		if i%256 == 0 && uint64(p-off) != markers[i/256] {
			return nil, false
		}
		if p >= markersAt {
			return nil, false
		}
		l := int(r.b[p])
		p++
		// Since 6.1 a length of 128 or more takes two bytes, low 7 bits
		// first ("big" symbols for Rust).
		if l&0x80 != 0 {
			if p >= markersAt {
				return nil, false
			}
			l = l&0x7f | int(r.b[p])<<7
			p++
		}
		if l == 0 || p+l > markersAt {
			return nil, false
		}
		buf = buf[:0]
		for _, c := range r.b[p : p+l] {
			buf = append(buf, t.tokens[c]...)
			if len(buf) > MaxSymbolLen {
				return nil, false
			}
		}
		p += l
		if len(buf) < 2 {
			return nil, false
		}
		syms = append(syms, Symbol{Type: buf[0], Name: string(buf[1:])})
	}
	if p > markersAt || markersAt-p >= 8 || !zeros(r, p, markersAt) {
		return nil, false
	}
	return syms, true
}

// addresses reads the symbols' addresses. Up to 6.1 the offsets (or
// absolute addresses) and the relative base precede kallsyms_num_syms at
// numAt; from 6.4 they follow the token index.
func addresses(r region, t tokens, numAt, n int, syms []Symbol) (*Kallsyms, error) {
	var errs []error
	// Layout up to 6.1: offsets, ALGN, relative_base, num_syms.
	if (r.base+uint64(numAt))%8 == 0 {
		rb := numAt - 8
		offs := rb - 4*n
		if (r.base+uint64(offs))%8 != 0 {
			offs -= 4
		}
		k, err := relative(r, offs, rb, n, syms)
		if err == nil {
			return k, nil
		}
		errs = append(errs, fmt.Errorf("offsets before kallsyms_num_syms: %w", err))
		k, err = absolute(r, numAt-8*n, n, syms)
		if err == nil {
			return k, nil
		}
		errs = append(errs, fmt.Errorf("addresses before kallsyms_num_syms: %w", err))
	}
	// Layout from 6.4: token_index, ALGN, offsets, ALGN, relative_base.
	offs := r.alignUp(t.end, 8)
	k, err := relative(r, offs, r.alignUp(offs+4*n, 8), n, syms)
	if err == nil {
		return k, nil
	}
	errs = append(errs, fmt.Errorf("offsets after kallsyms_token_index: %w", err))
	k, err = absolute(r, offs, n, syms)
	if err == nil {
		return k, nil
	}
	errs = append(errs, fmt.Errorf("addresses after kallsyms_token_index: %w", err))
	return nil, errors.Join(errs...)
}

// relative decodes base-relative offsets. With absolute per-CPU symbols
// (x86-64 SMP up to 6.14), text symbols have negative offsets; otherwise
// every offset is an unsigned distance from the base, far below 2 GiB, so
// the presence of a negative offset tells the mode.
func relative(r region, offs, rb, n int, syms []Symbol) (*Kallsyms, error) {
	base, ok := r.u64(rb)
	if !ok || offs < 0 || offs+4*n > len(r.b) {
		return nil, errors.New("tables outside the region")
	}
	if base == 0 {
		return nil, errors.New("relative base is 0")
	}
	absPercpu := false
	for i := range n {
		v, _ := r.u32(offs + 4*i)
		if int32(v) < 0 {
			absPercpu = true
			break
		}
	}
	for i := range n {
		v, _ := r.u32(offs + 4*i)
		o := int32(v)
		switch {
		case !absPercpu:
			syms[i].Addr = base + uint64(v)
		case o >= 0:
			syms[i].Addr = uint64(o)
		default:
			syms[i].Addr = base - 1 - uint64(int64(o))
		}
	}
	if err := sorted(syms); err != nil {
		return nil, err
	}
	return &Kallsyms{Symbols: syms, RelativeBase: base, AbsolutePercpu: absPercpu, Offsets: r.base + uint64(offs)}, nil
}

// absolute decodes kallsyms_addresses (CONFIG_KALLSYMS_BASE_RELATIVE=n).
func absolute(r region, at, n int, syms []Symbol) (*Kallsyms, error) {
	if at < 0 || at+8*n > len(r.b) {
		return nil, errors.New("tables outside the region")
	}
	for i := range n {
		syms[i].Addr, _ = r.u64(at + 8*i)
	}
	if err := sorted(syms); err != nil {
		return nil, err
	}
	return &Kallsyms{Symbols: syms, Offsets: r.base + uint64(at)}, nil
}

// sorted checks that the addresses ascend, as scripts/kallsyms sorts them;
// it tells real address tables from neighbouring data.
func sorted(syms []Symbol) error {
	bad := 0
	for i := 1; i < len(syms); i++ {
		if syms[i].Addr < syms[i-1].Addr {
			bad++
		}
	}
	if bad > len(syms)/100 {
		return fmt.Errorf("%d of %d addresses out of order", bad, len(syms))
	}
	return nil
}
