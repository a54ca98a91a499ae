package pdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// buildMSF lays streams out in an MSF 7.00 file with 512-byte blocks:
// superblock, two free-page-map blocks, stream data, directory, block map.
func buildMSF(streams [][]byte) []byte {
	const bs = 512
	le := binary.LittleEndian
	var blocks [][]byte
	alloc := func(data []byte) []uint32 {
		var idx []uint32
		for len(data) > 0 {
			b := make([]byte, bs)
			n := copy(b, data)
			data = data[n:]
			idx = append(idx, uint32(3+len(blocks)))
			blocks = append(blocks, b)
		}
		return idx
	}
	dir := le.AppendUint32(nil, uint32(len(streams)))
	var lists [][]uint32
	for _, s := range streams {
		if s == nil {
			dir = le.AppendUint32(dir, nilStream)
			lists = append(lists, nil)
			continue
		}
		dir = le.AppendUint32(dir, uint32(len(s)))
		lists = append(lists, alloc(s))
	}
	for _, l := range lists {
		for _, b := range l {
			dir = le.AppendUint32(dir, b)
		}
	}
	dirBlocks := alloc(dir)
	var m []byte
	for _, b := range dirBlocks {
		m = le.AppendUint32(m, b)
	}
	mapBlock := alloc(m)[0]
	sb := make([]byte, bs)
	copy(sb, msfMagic)
	h := sb[len(msfMagic):]
	le.PutUint32(h[0:], bs)
	le.PutUint32(h[4:], 1)
	le.PutUint32(h[8:], uint32(3+len(blocks)))
	le.PutUint32(h[12:], uint32(len(dir)))
	le.PutUint32(h[20:], mapBlock)
	out := append(sb, make([]byte, 2*bs)...)
	for _, b := range blocks {
		out = append(out, b...)
	}
	return out
}

// tpi builds a TPI stream from records given as leaf kind plus body.
func tpi(recs ...[]byte) []byte {
	le := binary.LittleEndian
	var data []byte
	for _, r := range recs {
		for len(r)%4 != 2 { // records are 4-aligned including the length
			r = append(r, 0xf0|byte(4-(len(r)+2)%4))
		}
		data = le.AppendUint16(data, uint16(len(r)))
		data = append(data, r...)
	}
	h := make([]byte, tpiHeaderSize)
	le.PutUint32(h[0:], 20040203)
	le.PutUint32(h[4:], tpiHeaderSize)
	le.PutUint32(h[8:], 0x1000)
	le.PutUint32(h[12:], 0x1000+uint32(len(recs)))
	le.PutUint32(h[16:], uint32(len(data)))
	return append(h, data...)
}

func rec(kind uint16, fields ...any) []byte {
	le := binary.LittleEndian
	b := le.AppendUint16(nil, kind)
	for _, f := range fields {
		switch v := f.(type) {
		case uint16:
			b = le.AppendUint16(b, v)
		case uint32:
			b = le.AppendUint32(b, v)
		case uint8:
			b = append(b, v)
		case string:
			b = append(append(b, v...), 0)
		case []byte:
			b = append(b, v...)
		}
	}
	return b
}

// withTPI returns the kernel fixture's streams with the TPI replaced.
func withTPI(t testing.TB, types []byte) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "kernel.pdb"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	streams := make([][]byte, f.NumStreams())
	for i := range streams {
		if s, err := f.Stream(i); err == nil {
			streams[i] = s
		}
	}
	streams[streamTPI] = types
	return buildMSF(streams)
}

func TestBuildMSFRoundTrip(t *testing.T) {
	data := withTPI(t, tpi(rec(lfPointer, uint32(0x0074), uint32(0x1000c))))
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Convert(data, Options{}); err != nil {
		t.Fatalf("rebuilt fixture: %v", err)
	}
	if in, err := f.Info(); err != nil || in.GUIDString() != "EC826749924C3CE74C4C44205044422E" {
		t.Fatalf("info %v", err)
	}
}

// Forged type graphs: reference cycles and runaway continuations end in
// ErrFormat, not in a hang or a stack overflow.
func TestTypeCycles(t *testing.T) {
	const ptr64 = uint32(0x0c | 8<<13)
	cases := map[string][][]byte{
		"pointer to itself": {
			rec(lfPointer, uint32(0x1000), ptr64),
			rec(lfFieldList, rec(lfMember, uint16(3), uint32(0x1000), uint16(0), "p")),
			rec(lfStructure, uint16(1), uint16(0), uint32(0x1001), uint32(0), uint32(0), uint16(8), "S"),
		},
		"modifier cycle": {
			rec(lfModifier, uint32(0x1001), uint16(1)),
			rec(lfModifier, uint32(0x1000), uint16(1)),
			rec(lfFieldList, rec(lfMember, uint16(3), uint32(0x1000), uint16(0), "m")),
			rec(lfStructure, uint16(1), uint16(0), uint32(0x1002), uint32(0), uint32(0), uint16(4), "S"),
		},
		"array of itself": {
			rec(lfArray, uint32(0x1000), uint32(0x23), uint16(8), ""),
			rec(lfFieldList, rec(lfMember, uint16(3), uint32(0x1000), uint16(0), "a")),
			rec(lfStructure, uint16(1), uint16(0), uint32(0x1001), uint32(0), uint32(0), uint16(8), "S"),
		},
		"field list continues into itself": {
			rec(lfFieldList, rec(lfMember, uint16(3), uint32(0x74), uint16(0), "x"), rec(lfIndex, uint16(0), uint32(0x1000))),
			rec(lfStructure, uint16(1), uint16(0), uint32(0x1000), uint32(0), uint32(0), uint16(4), "S"),
		},
		"reference past the table": {
			rec(lfFieldList, rec(lfMember, uint16(3), uint32(0x7000), uint16(0), "x")),
			rec(lfStructure, uint16(1), uint16(0), uint32(0x1000), uint32(0), uint32(0), uint16(4), "S"),
		},
		"field list is not one": {
			rec(lfStructure, uint16(1), uint16(0), uint32(0x1000), uint32(0), uint32(0), uint16(4), "S"),
		},
		"unknown numeric leaf": {
			rec(lfStructure, uint16(1), uint16(0), uint32(0), uint32(0), uint32(0), uint16(0x8005), uint32(0), "S"),
		},
		"unterminated name": {
			rec(lfStructure, uint16(1), uint16(0), uint32(0), uint32(0), uint32(0), uint16(4), []byte("SSS")),
		},
	}
	for name, recs := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Convert(withTPI(t, tpi(recs...)), Options{})
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("err %v", err)
			}
			t.Log(err)
		})
	}
}

func TestStripName(t *testing.T) {
	for in, want := range map[string]string{
		"PsActiveProcessHead":          "PsActiveProcessHead",
		"_PsActiveProcessHead":         "PsActiveProcessHead",
		"@KfRaiseIrql@4":               "KfRaiseIrql",
		"_NtCreateFile@44":             "NtCreateFile",
		"?GlobalDerived@@3UDerived@@A": "GlobalDerived",
		"a@b":                          "a@b",
	} {
		if got := stripName(in); got != want {
			t.Errorf("stripName(%q) = %q, want %q", in, got, want)
		}
	}
}

// Many structs sharing one large field list of deep types would multiply
// into gigabytes of JSON; the output budget stops the conversion early.
func TestOutputBudget(t *testing.T) {
	const ptr64 = uint32(0x0c | 8<<13)
	var recs [][]byte
	// 0x1000..0x100c: a chain of 13 pointers ending in int.
	recs = append(recs, rec(lfPointer, uint32(0x74), ptr64))
	for i := 1; i < 13; i++ {
		recs = append(recs, rec(lfPointer, uint32(0x1000+i-1), ptr64))
	}
	// 0x100d: a field list of 4000 members of the deepest pointer.
	var members []byte
	for i := range 4000 {
		members = append(members, rec(lfMember, uint16(3), uint32(0x100c), uint16(0), "m"+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676)))...)
	}
	recs = append(recs, rec(lfFieldList, members))
	for i := range 3000 {
		recs = append(recs, rec(lfStructure, uint16(4000), uint16(0), uint32(0x100d), uint32(0), uint32(0), uint16(8), "S"+string(rune('A'+i%26))+string(rune('A'+i/26%26))+string(rune('A'+i/676))))
	}
	_, err := Convert(withTPI(t, tpi(recs...)), Options{})
	if !errors.Is(err, ErrFormat) {
		t.Fatalf("err %v", err)
	}
	t.Log(err)
}

// Members the converter skips still cost: structs sharing a list of 4000
// nested-type entries cannot make it loop for long.
func TestSkippedMembersBudget(t *testing.T) {
	var members []byte
	for range 4000 {
		members = append(members, rec(lfNestType, uint16(0), uint32(0x74), "")...)
	}
	recs := [][]byte{rec(lfFieldList, members)}
	for i := range 6000 {
		recs = append(recs, rec(lfStructure, uint16(4000), uint16(0), uint32(0x1000), uint32(0), uint32(0), uint16(8), fmt.Sprintf("S%d", i)))
	}
	_, err := Convert(withTPI(t, tpi(recs...)), Options{})
	if !errors.Is(err, ErrFormat) {
		t.Fatalf("err %v", err)
	}
}
