package pdb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// minimalPDB builds a small PDB around a TPI stream: info stream, DBI with
// a section header stream, and two public symbols (NtCreateFile in .text,
// PsActiveProcessHead in .data).
func minimalPDB(types []byte) []byte { return buildMSF(minimalStreams(types)) }

func minimalStreams(types []byte) [][]byte {
	le := binary.LittleEndian
	info := make([]byte, 28)
	le.PutUint32(info[0:], 20000404)
	le.PutUint32(info[8:], 1)
	copy(info[12:], "0123456789abcdef")

	dbi := make([]byte, dbiHeaderSize)
	le.PutUint32(dbi[0:], 0xffffffff)
	le.PutUint32(dbi[4:], 19990903)
	le.PutUint32(dbi[8:], 1)       // age
	le.PutUint16(dbi[20:], 5)      // symbol records
	le.PutUint32(dbi[48:], 22)     // optional debug header: 11 streams
	le.PutUint16(dbi[58:], 0x8664) // machine
	for i := range 11 {
		v := uint16(0xffff)
		if i == 5 {
			v = 6 // section headers
		}
		dbi = le.AppendUint16(dbi, v)
	}

	var syms []byte
	pub := func(seg uint16, off uint32, name string) {
		r := le.AppendUint16(nil, sPub32)
		r = le.AppendUint32(r, 2)
		r = le.AppendUint32(r, off)
		r = le.AppendUint16(r, seg)
		r = append(append(r, name...), 0)
		for (len(r)+2)%4 != 0 {
			r = append(r, 0)
		}
		syms = append(le.AppendUint16(syms, uint16(len(r))), r...)
	}
	pub(1, 0x20, "NtCreateFile")
	pub(2, 0x10, "PsActiveProcessHead")
	pub(0, 5, "AbsoluteSymbol")

	sec := func(name string, va uint32) []byte {
		h := make([]byte, sectionHeaderSize)
		copy(h, name)
		le.PutUint32(h[8:], 0x1000)
		le.PutUint32(h[12:], va)
		return h
	}
	secs := append(sec(".text", 0x1000), sec(".data", 0x3000)...)
	return [][]byte{{}, info, types, dbi, nil, syms, secs}
}

// An image rearranged after linking: symbols refer to the original
// sections and OMAP maps their RVAs into the final image.
func TestOMAP(t *testing.T) {
	le := binary.LittleEndian
	streams := minimalStreams(tpi())
	dbg := streams[streamDBI][dbiHeaderSize:]
	le.PutUint16(dbg[2*4:], 7)  // OMAP from source
	le.PutUint16(dbg[2*10:], 8) // original section headers
	var om []byte
	for _, e := range [][2]uint32{{0x1000, 0x5000}, {0x2000, 0x9000}, {0x2100, 0}} {
		om = le.AppendUint32(le.AppendUint32(om, e[0]), e[1])
	}
	orig := make([]byte, 2*sectionHeaderSize)
	le.PutUint32(orig[12:], 0x1000)
	le.PutUint32(orig[sectionHeaderSize+12:], 0x2000)
	streams = append(streams, om, orig)
	js, err := Convert(buildMSF(streams), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"NtCreateFile":{"address":20512}`, `"PsActiveProcessHead":{"address":36880}`} {
		if !bytes.Contains(js, []byte(w)) {
			t.Errorf("output lacks %s\n%s", w, js)
		}
	}
	m := &omap{from: []uint32{0x1000, 0x2000, 0x2100}, to: []uint32{0x5000, 0x9000, 0}}
	for in, want := range map[uint32]uint32{0x10: 0, 0x1000: 0x5000, 0x1fff: 0x5fff, 0x2004: 0x9004, 0x2100: 0, 0x3000: 0} {
		if got := m.lookup(in); got != want {
			t.Errorf("omap %#x = %#x, want %#x", in, got, want)
		}
	}
}

// smallTypes is a kernel-like TPI: a self-referencing list entry, a struct
// with a bitfield, an array, an enum, a forward reference resolved later
// and a field list continued with LF_INDEX.
func smallTypes() []byte {
	const ptr64 = uint32(0x0c | 8<<13)
	return tpi(
		/* 0x1000 */ rec(lfStructure, uint16(0), uint16(propFwdRef), uint32(0), uint32(0), uint32(0), uint16(0), "_LIST_ENTRY"),
		/* 0x1001 */ rec(lfPointer, uint32(0x1000), ptr64),
		/* 0x1002 */ rec(lfFieldList, rec(lfMember, uint16(3), uint32(0x1001), uint16(0), "Flink"), rec(lfMember, uint16(3), uint32(0x1001), uint16(8), "Blink")),
		/* 0x1003 */ rec(lfStructure, uint16(2), uint16(0), uint32(0x1002), uint32(0), uint32(0), uint16(16), "_LIST_ENTRY"),
		/* 0x1004 */ rec(lfBitfield, uint32(0x22), uint8(5), uint8(3)),
		/* 0x1005 */ rec(lfArray, uint32(0x20), uint32(0x23), uint16(15), ""),
		/* 0x1006 */ rec(lfFieldList, rec(lfEnumerate, uint16(3), uint16(0), "Off"), rec(lfEnumerate, uint16(3), uint16(lfChar), uint8(0xfe), "Minus2"), rec(lfEnumerate, uint16(3), uint16(lfULong), uint32(0x12345678), "Big")),
		/* 0x1007 */ rec(lfEnum, uint16(3), uint16(0), uint32(0x74), uint32(0x1006), "_MODE"),
		/* 0x1008 */ rec(lfFieldList, rec(lfMember, uint16(3), uint32(0x1007), uint16(40), "Mode")),
		/* 0x1009 */ rec(lfFieldList, rec(lfMember, uint16(3), uint32(0x1000), uint16(0), "Links"), rec(lfMember, uint16(3), uint32(0x1004), uint16(16), "Bits"), rec(lfMember, uint16(3), uint32(0x1005), uint16(20), "Name"), rec(lfIndex, uint16(0), uint32(0x1008))),
		/* 0x100a */ rec(lfStructure, uint16(4), uint16(0), uint32(0x1009), uint32(0), uint32(0), uint16(48), "_EPROCESS"),
		// Sizes and offsets past 0x8000 take numeric leaves.
		/* 0x100b */
		rec(lfFieldList, rec(lfMember, uint16(3), uint32(0x1001), uint16(lfUShort), uint16(0x9000), "CurrentThread"), rec(lfMember, uint16(3), uint32(0x23), uint16(lfULong), uint32(0x12340), "Far")),
		/* 0x100c */ rec(lfStructure, uint16(2), uint16(0), uint32(0x100b), uint32(0), uint32(0), uint16(lfULong), uint32(0x20000), "_KPRCB"),
		// The newer LF_STRUCTURE2 layout: 32-bit properties, count and
		// size as numerics.
		/* 0x100d */
		rec(lfStructure2, uint32(0), uint32(0x1002), uint32(0), uint32(0), uint16(2), uint16(lfUShort), uint16(0x8010), "_NEWER"),
	)
}

func TestMinimalPDB(t *testing.T) {
	js, err := Convert(minimalPDB(smallTypes()), Options{Database: "ntkrnlmp.pdb"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`"NtCreateFile":{"address":4128}`,
		`"PsActiveProcessHead":{"address":12304}`,
		`"_EPROCESS":{"fields":{"Bits":{"offset":16,"type":{"bit_length":5,"bit_position":3,"kind":"bitfield","type":{"kind":"base","name":"unsigned long"}}},"Links":{"offset":0,"type":{"kind":"struct","name":"_LIST_ENTRY"}},"Mode":{"offset":40,"type":{"kind":"enum","name":"_MODE"}},"Name":{"offset":20,"type":{"count":15,"kind":"array","subtype":{"kind":"base","name":"unsigned char"}}}},"kind":"struct","size":48}`,
		`"_MODE":{"base":"int","constants":{"Big":305419896,"Minus2":-2,"Off":0},"size":4}`,
		`"Flink":{"offset":0,"type":{"kind":"pointer","subtype":{"kind":"struct","name":"_LIST_ENTRY"}}}`,
		`"GUID":"33323130353437363839616263646566","age":1,"database":"ntkrnlmp.pdb","machine_type":34404`,
		`"_KPRCB":{"fields":{"CurrentThread":{"offset":36864,`,
		`"Far":{"offset":74560,"type":{"kind":"base","name":"unsigned long long"}}},"kind":"struct","size":131072}`,
		`"_NEWER":{"fields":{"Blink":{"offset":8,`,
		`"kind":"struct","size":32784}`,
	}
	for _, w := range want {
		if !bytes.Contains(js, []byte(w)) {
			t.Errorf("output lacks %s\n%s", w, js)
		}
	}
	if bytes.Contains(js, []byte("AbsoluteSymbol")) {
		t.Error("a symbol without a section got an RVA")
	}
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzPDB's small seeds when
// PDB_WRITE_SEEDS=1; otherwise it checks they are there.
func TestWriteFuzzSeeds(t *testing.T) {
	const ptr64 = uint32(0x0c | 8<<13)
	seeds := map[string][]byte{
		"minimal": minimalPDB(smallTypes()),
		"pointer-cycle": minimalPDB(tpi(
			rec(lfPointer, uint32(0x1000), ptr64),
			rec(lfFieldList, rec(lfMember, uint16(3), uint32(0x1000), uint16(0), "p")),
			rec(lfStructure, uint16(1), uint16(0), uint32(0x1001), uint32(0), uint32(0), uint16(8), "S"))),
		"index-cycle": minimalPDB(tpi(
			rec(lfFieldList, rec(lfMember, uint16(3), uint32(0x74), uint16(0), "x"), rec(lfIndex, uint16(0), uint32(0x1000))),
			rec(lfStructure, uint16(1), uint16(0), uint32(0x1000), uint32(0), uint32(0), uint16(4), "S"))),
		"no-types": minimalPDB(tpi()),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzPDB")
	for name, b := range seeds {
		p := filepath.Join(dir, "seed-"+name)
		if os.Getenv("PDB_WRITE_SEEDS") == "1" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := os.Stat(p); err != nil {
			t.Errorf("seed %s missing (run with PDB_WRITE_SEEDS=1): %v", name, err)
		}
	}
}
