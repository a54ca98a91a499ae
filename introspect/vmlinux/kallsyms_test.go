package vmlinux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
)

// layout selects how buildKallsyms arranges the tables, as the kernel
// versions do.
type layout int

const (
	layout61       layout = iota // offsets, base, num, names, markers, tokens (4.6-6.1)
	layout61Seqs                 // as 6.1 plus kallsyms_seqs_of_names (6.2, 6.3, Debian 6.1)
	layout64                     // num, names, markers, tokens, offsets, base (6.4+)
	layoutAbs                    // absolute addresses, no relative base
	layoutNoPercpu               // 6.1 order, unsigned offsets without absolute per-CPU
)

// testSym is a symbol for the synthetic tables: type character + name.
type testSym struct {
	typ  byte
	name string
	addr uint64
}

// buildKallsyms lays out kallsyms tables for syms (sorted by address, as
// scripts/kallsyms does) the way the kernel's build emits them, at link
// address base, after pre bytes of unrelated data. It compresses names
// with a token table in which every used byte is its own token and a few
// unused codes stand for common substrings.
func buildKallsyms(t testing.TB, syms []testSym, l layout, base uint64, pre []byte) []byte {
	t.Helper()
	sort.SliceStable(syms, func(i, j int) bool { return syms[i].addr < syms[j].addr })
	const relBase = 0xffffffff81000000

	var tokens [256]string
	used := [256]bool{}
	for _, s := range syms {
		used[s.typ] = true
		for i := range len(s.name) {
			used[s.name[i]] = true
		}
	}
	for c := '0'; c <= '9'; c++ {
		used[c] = true // the parser relies on digits being tokens
	}
	subs := []string{"do_", "sys_", "task", "write", "_t", "init_", "per_cpu", "entry_"}
	var codes []byte
	for c := range 256 {
		if used[c] {
			tokens[c] = string(rune(c))
			if c >= 0x80 {
				tokens[c] = string([]byte{byte(c)})
			}
		} else {
			codes = append(codes, byte(c))
		}
	}
	for i, s := range subs {
		if i < len(codes) {
			tokens[codes[i]] = s
		}
	}
	// Remaining unused codes get a filler token, so that none is empty.
	for _, c := range codes[min(len(subs), len(codes)):] {
		tokens[c] = "z"
	}
	compress := func(s string) []byte {
		var out []byte
		for i := 0; i < len(s); {
			best := -1
			for j, sub := range subs {
				if j < len(codes) && strings.HasPrefix(s[i:], sub) {
					best = j
					break
				}
			}
			if best >= 0 {
				out = append(out, codes[best])
				i += len(subs[best])
			} else {
				out = append(out, s[i])
				i++
			}
		}
		return out
	}

	var b bytes.Buffer
	b.Write(pre)
	align := func() {
		for (base+uint64(b.Len()))%8 != 0 {
			b.WriteByte(0)
		}
	}
	le32 := func(v uint32) { binary.Write(&b, binary.LittleEndian, v) }
	le64 := func(v uint64) { binary.Write(&b, binary.LittleEndian, v) }
	n := len(syms)
	writeAddrs := func() {
		align()
		absPercpu := l != layoutNoPercpu
		if l == layoutAbs {
			for _, s := range syms {
				le64(s.addr)
			}
			return
		}
		for _, s := range syms {
			switch {
			case !absPercpu:
				le32(uint32(s.addr - relBase))
			case s.addr < relBase: // per-CPU: absolute
				le32(uint32(s.addr))
			default:
				le32(uint32(int32(-int64(s.addr-relBase) - 1)))
			}
		}
		align()
		le64(relBase)
	}
	if l != layout64 {
		writeAddrs()
	}
	align()
	le32(uint32(n))
	align()
	var markers []uint32
	namesStart := b.Len()
	for i, s := range syms {
		if i%256 == 0 {
			markers = append(markers, uint32(b.Len()-namesStart))
		}
		c := compress(string(s.typ) + s.name)
		if len(c) >= 0x80 {
			b.WriteByte(byte(len(c)&0x7f | 0x80))
			b.WriteByte(byte(len(c) >> 7))
		} else {
			b.WriteByte(byte(len(c)))
		}
		b.Write(c)
	}
	align()
	for _, m := range markers {
		le32(m)
	}
	if l == layout61Seqs {
		align()
		// Indexes of the symbols sorted by name, 3 bytes big-endian.
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(i, j int) bool { return syms[idx[i]].name < syms[idx[j]].name })
		for _, i := range idx {
			b.Write([]byte{byte(i >> 16), byte(i >> 8), byte(i)})
		}
	}
	align()
	var index [256]uint16
	tableStart := b.Len()
	for c, tok := range tokens {
		index[c] = uint16(b.Len() - tableStart)
		b.WriteString(tok)
		b.WriteByte(0)
	}
	align()
	for _, v := range index {
		binary.Write(&b, binary.LittleEndian, v)
	}
	if l == layout64 {
		writeAddrs()
	}
	b.Write(bytes.Repeat([]byte{0xa5}, 64)) // unrelated data after
	return b.Bytes()
}

// testSymbols returns n synthetic symbols in the kernel's address ranges,
// including per-CPU ones at small addresses and a long "big" name.
func testSymbols(n int) []testSym {
	syms := []testSym{
		{'D', "current_task", 0x1fb80},
		{'D', "fixed_percpu_data", 0},
		{'T', "_text", 0xffffffff81000000},
		{'T', "do_sys_openat2", 0xffffffff8134a350},
		{'T', "entry_SYSCALL_64", 0xffffffff81c00080},
		{'D', "init_task", 0xffffffff82a1aa40},
		{'t', strings.Repeat("long_rust_symbol_", 12), 0xffffffff81500000},
		{'t', "local_dup", 0xffffffff81600000},
		{'T', "local_dup", 0xffffffff81600010},
	}
	for i := len(syms); i < n; i++ {
		syms = append(syms, testSym{'t', fmt.Sprintf("fn_%d_write_task", i), 0xffffffff81001000 + uint64(i)*0x40})
	}
	return syms
}

func TestParseKallsymsLayouts(t *testing.T) {
	const base = 0xffffffff82000000
	for _, tc := range []struct {
		name string
		l    layout
		n    int
	}{
		{"6.1", layout61, 1000},
		{"6.1-seqs", layout61Seqs, 1000},
		{"6.4", layout64, 1000},
		{"absolute", layoutAbs, 700},
		{"relative-no-percpu", layoutNoPercpu, 300},
		{"one-marker", layout61, 20},
		{"exact-256", layout61Seqs, 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			syms := testSymbols(tc.n)
			if tc.l == layoutNoPercpu {
				syms = syms[2:] // no per-CPU symbols without absolute per-CPU
			}
			data := buildKallsyms(t, syms, tc.l, base, bytes.Repeat([]byte{0x11, 0, 0, 0}, 100))
			k, err := ParseKallsyms(data, base)
			if err != nil {
				t.Fatal(err)
			}
			if len(k.Symbols) != len(syms) {
				t.Fatalf("%d symbols, want %d", len(k.Symbols), len(syms))
			}
			for i, s := range syms {
				got := k.Symbols[i]
				if got.Name != s.name || got.Addr != s.addr || got.Type != s.typ {
					t.Fatalf("symbol %d = %c %q %#x, want %c %q %#x", i, got.Type, got.Name, got.Addr, s.typ, s.name, s.addr)
				}
			}
			wantPercpu := tc.l != layoutNoPercpu && tc.l != layoutAbs
			if k.AbsolutePercpu != wantPercpu {
				t.Errorf("AbsolutePercpu = %v, want %v", k.AbsolutePercpu, wantPercpu)
			}
			if a, ok := k.Lookup("local_dup"); !ok || a != 0xffffffff81600010 {
				t.Errorf("Lookup(local_dup) = %#x, %v; want the global one", a, ok)
			}
			if a := k.Map()["local_dup"]; a != 0xffffffff81600010 {
				t.Errorf("Map()[local_dup] = %#x, want the global one", a)
			}
		})
	}
}

func TestParseKallsymsUnalignedBase(t *testing.T) {
	// A region that starts off an 8-byte boundary: alignment is of link
	// addresses, not region offsets.
	const base = 0xffffffff82000004
	syms := testSymbols(600)
	data := buildKallsyms(t, syms, layout61Seqs, base, []byte{1, 2, 3, 4})
	k, err := ParseKallsyms(data, base)
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := k.Lookup("init_task"); !ok || a != 0xffffffff82a1aa40 {
		t.Errorf("init_task = %#x, %v", a, ok)
	}
}

func TestParseKallsymsRejects(t *testing.T) {
	const base = 0xffffffff82000000
	good := buildKallsyms(t, testSymbols(600), layout61, base, nil)
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"zeros", make([]byte, 1<<16)},
		{"truncated-front", good[len(good)/2:]},
		{"truncated-back", good[:len(good)-600]},
		{"ascending-u16", func() []byte {
			b := make([]byte, 1024)
			for i := range 512 {
				binary.LittleEndian.PutUint16(b[2*i:], uint16(i))
			}
			return b
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseKallsyms(tc.data, base)
			if !errors.Is(err, ErrNoKallsyms) {
				t.Fatalf("err = %v, want ErrNoKallsyms", err)
			}
		})
	}
}

func TestParseKallsymsCorruptNames(t *testing.T) {
	// Flip bytes all over the tables: the parser returns an error or a
	// table, never panics, and a returned table still has sane names.
	const base = 0xffffffff82000000
	good := buildKallsyms(t, testSymbols(600), layout61Seqs, base, nil)
	for i := 0; i < len(good); i += 7 {
		b := bytes.Clone(good)
		b[i] ^= 0x5a
		k, err := ParseKallsyms(b, base)
		if err != nil {
			continue
		}
		for _, s := range k.Symbols {
			if len(s.Name) >= MaxSymbolLen {
				t.Fatalf("flip at %d: name of %d bytes", i, len(s.Name))
			}
		}
	}
}

func BenchmarkParseKallsymsSynthetic(b *testing.B) {
	const base = 0xffffffff82000000
	data := buildKallsyms(b, testSymbols(100000), layout61Seqs, base, make([]byte, 1<<20))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := ParseKallsyms(data, base); err != nil {
			b.Fatal(err)
		}
	}
}
