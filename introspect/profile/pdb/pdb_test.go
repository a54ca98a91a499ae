package pdb_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile/pdb"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// convert converts a fixture and reads the result back with the ISF reader
// the OS layers use.
func convert(t *testing.T, name string) *profile.ISF {
	t.Helper()
	js, err := pdb.Convert(fixture(t, name), pdb.Options{Database: "ntkrnlmp.pdb"})
	if err != nil {
		t.Fatalf("convert %s: %v", name, err)
	}
	isf, err := profile.ParseISF(js)
	if err != nil {
		t.Fatalf("read back %s: %v", name, err)
	}
	return isf
}

type fieldWant struct {
	name   string
	offset uint64
	kind   profile.Kind
	size   uint64 // of the field's type; 0 = not checked
}

func checkStruct(t *testing.T, p *profile.Profile, name string, size uint64, union bool, fields []fieldWant) {
	t.Helper()
	s, err := p.Struct(name)
	if err != nil {
		t.Fatal(err)
	}
	if s.Size != size || s.Union != union {
		t.Errorf("%s: size %d union %v, want %d %v", name, s.Size, s.Union, size, union)
	}
	for _, w := range fields {
		f, ok := s.Fields[w.name]
		if !ok {
			t.Errorf("%s.%s missing", name, w.name)
			continue
		}
		if f.Offset != w.offset || f.Type.Kind != w.kind || (w.size != 0 && f.Type.Size != w.size) {
			t.Errorf("%s.%s: offset %d kind %d size %d, want %d %d %d", name, w.name, f.Offset, f.Type.Kind, f.Type.Size, w.offset, w.kind, w.size)
		}
	}
}

func checkBitfield(t *testing.T, p *profile.Profile, s, f string, offset uint64, pos, length uint8, unit uint64) {
	t.Helper()
	fl, err := p.Field(s, f)
	if err != nil {
		t.Fatal(err)
	}
	ty := fl.Type
	if fl.Offset != offset || ty.Kind != profile.KindBitfield || ty.BitPos != pos || ty.BitLen != length || ty.Size != unit {
		t.Errorf("%s.%s: offset %d kind %d bits %d:%d unit %d, want %d bitfield %d:%d unit %d",
			s, f, fl.Offset, ty.Kind, ty.BitPos, ty.BitLen, ty.Size, offset, pos, length, unit)
	}
}

// Expected values below are from
// llvm-pdbutil dump -types -publics -section-headers testdata/kernel.pdb.
func TestConvertKernel64(t *testing.T) {
	isf := convert(t, "kernel.pdb")
	p := isf.Profile
	w := isf.Metadata.Windows
	if w == nil || w.GUID != "EC826749924C3CE74C4C44205044422E" || w.Age != 1 || w.Database != "ntkrnlmp.pdb" || w.MachineType != 0x8664 {
		t.Fatalf("metadata %+v", w)
	}
	if p.Name != "ntkrnlmp.pdb/EC826749924C3CE74C4C44205044422E1" {
		t.Errorf("profile name %q", p.Name)
	}
	if isf.BaseTypes["pointer"].Size != 8 {
		t.Errorf("pointer base type %+v", isf.BaseTypes["pointer"])
	}

	checkStruct(t, p, "_EPROCESS", 256, false, []fieldWant{
		{"Pcb", 0, profile.KindStruct, 72},
		{"UniqueProcessId", 72, profile.KindPointer, 8},
		{"ActiveProcessLinks", 80, profile.KindStruct, 16},
		{"Flags2", 96, profile.KindBase, 4},
		{"Token", 104, profile.KindStruct, 8},
		{"Self", 112, profile.KindPointer, 8},
		{"Type", 120, profile.KindPointer, 8},
		{"InheritedFromUniqueProcessId", 128, profile.KindPointer, 8},
		{"ObjectTable", 136, profile.KindPointer, 8},
		{"Peb", 144, profile.KindPointer, 8},
		{"ImageFileName", 152, profile.KindArray, 15},
		{"PoolType", 168, profile.KindEnum, 4},
		{"Cookies", 176, profile.KindArray, 48},
		{"ActiveThreads", 224, profile.KindBase, 4}, // volatile modifier
		{"ImagePathName", 232, profile.KindPointer, 8},
		{"Callback", 240, profile.KindPointer, 8},
		{"Version", 248, profile.KindStruct, 4},
		{"EmptyTail", 252, profile.KindArray, 1},
	})
	checkBitfield(t, p, "_EPROCESS", "JobNotReallyActive", 96, 0, 1, 4)
	checkBitfield(t, p, "_EPROCESS", "AccountingFolded", 96, 1, 1, 4)
	checkBitfield(t, p, "_EPROCESS", "ExitProcessReported", 96, 3, 1, 4)
	checkBitfield(t, p, "_EPROCESS", "ProtectedBits", 96, 4, 5, 4)
	checkBitfield(t, p, "_EPROCESS", "Reserved", 96, 9, 23, 4)

	// Self points back at the struct; Type and ObjectTable at structs
	// kernel.c only forward-declares (_HANDLE_TABLE is defined in another
	// object file): all resolve to the full definitions.
	for f, want := range map[string]struct {
		name string
		size uint64
	}{"Self": {"_EPROCESS", 256}, "Type": {"_OBJECT_TYPE", 48}, "ObjectTable": {"_HANDLE_TABLE", 40}, "ImagePathName": {"_UNICODE_STRING", 16}} {
		fl, _ := p.Field("_EPROCESS", f)
		if e := fl.Type.Elem; e == nil || e.Kind != profile.KindStruct || e.Name != want.name || e.Size != want.size {
			t.Errorf("_EPROCESS.%s points to %+v, want %s of %d bytes", f, fl.Type.Elem, want.name, want.size)
		}
	}
	cookies, _ := p.Field("_EPROCESS", "Cookies")
	if c := cookies.Type; c.Count != 2 || c.Elem == nil || c.Elem.Kind != profile.KindArray || c.Elem.Count != 3 || c.Elem.Size != 24 || c.Elem.Elem.Size != 8 {
		t.Errorf("Cookies %+v", c)
	}
	name, _ := p.Field("_EPROCESS", "ImageFileName")
	if e := name.Type.Elem; name.Type.Count != 15 || e == nil || e.Kind != profile.KindBase || e.Name != "unsigned char" {
		t.Errorf("ImageFileName %+v", name.Type)
	}
	cb, _ := p.Field("_EPROCESS", "Callback")
	if e := cb.Type.Elem; e == nil || e.Kind != profile.KindFunction {
		t.Errorf("Callback %+v", cb.Type)
	}
	// A named member of an anonymous struct type gets pdbconv's
	// __unnamed_<type index> name (0x1022 in the dump).
	ver, _ := p.Field("_EPROCESS", "Version")
	if ver.Type.Name != "__unnamed_1022" {
		t.Errorf("Version type %q", ver.Type.Name)
	}
	checkStruct(t, p, "__unnamed_1022", 4, false, []fieldWant{{"Major", 0, profile.KindBase, 2}, {"Minor", 2, profile.KindBase, 2}})

	checkStruct(t, p, "_KPROCESS", 72, false, []fieldWant{
		{"DirectoryTableBase", 40, profile.KindBase, 8},
		{"UserDirectoryTableBase", 64, profile.KindBase, 8},
	})
	// Members of anonymous unions and structs are flattened into the parent.
	checkStruct(t, p, "_HANDLE_TABLE_ENTRY", 16, true, []fieldWant{
		{"VolatileLowValue", 0, profile.KindBase, 8},
		{"HighValue", 0, profile.KindBase, 8},
	})
	checkBitfield(t, p, "_HANDLE_TABLE_ENTRY", "Unlocked", 0, 0, 1, 8)
	checkBitfield(t, p, "_HANDLE_TABLE_ENTRY", "RefCnt", 0, 1, 16, 8)
	checkBitfield(t, p, "_HANDLE_TABLE_ENTRY", "Attributes", 0, 17, 3, 8)
	checkBitfield(t, p, "_HANDLE_TABLE_ENTRY", "ObjectPointerBits", 0, 20, 44, 8)
	checkBitfield(t, p, "_HANDLE_TABLE_ENTRY", "GrantedAccessBits", 8, 0, 25, 4)
	checkBitfield(t, p, "_HANDLE_TABLE_ENTRY", "NoRightsUpgrade", 8, 25, 1, 4)
	checkBitfield(t, p, "_HANDLE_TABLE_ENTRY", "Spare1", 8, 26, 6, 4)
	checkBitfield(t, p, "_EX_FAST_REF", "RefCnt", 0, 0, 4, 8)
	// Sibling anonymous structs (0x105A, 0x105C) share clang's name
	// "_HANDLE_TABLE_ENTRY::<unnamed-tag>" and stay apart by index.
	checkStruct(t, p, "__unnamed_105a", 8, false, []fieldWant{{"ObjectPointerBits", 0, profile.KindBitfield, 8}})
	checkStruct(t, p, "__unnamed_105c", 16, false, []fieldWant{{"GrantedAccessBits", 8, profile.KindBitfield, 4}})

	checkStruct(t, p, "_OBJECT_HEADER", 56, false, []fieldWant{
		{"PointerCount", 0, profile.KindBase, 8},
		{"TypeIndex", 24, profile.KindBase, 1},
		{"InfoMask", 26, profile.KindBase, 1},
		{"ObjectCreateInfo", 32, profile.KindPointer, 8},
		{"QuotaBlockCharged", 32, profile.KindPointer, 8},
		{"SecurityDescriptor", 40, profile.KindPointer, 8},
		{"Body", 48, profile.KindBase, 8},
	})
	checkStruct(t, p, "_KPCR", 128, false, []fieldWant{
		{"GdtBase", 0, profile.KindPointer, 8},
		{"TssBase", 8, profile.KindPointer, 8},
		{"NtTibBytes", 0, profile.KindArray, 56},
		{"Self", 56, profile.KindPointer, 8},
		{"CurrentPrcb", 64, profile.KindPointer, 8},
		{"Reserved", 72, profile.KindArray, 32},
		{"Prcb", 104, profile.KindStruct, 24},
	})
	checkStruct(t, p, "_KPRCB", 24, false, []fieldWant{{"CurrentThread", 8, profile.KindPointer, 8}, {"NextThread", 16, profile.KindPointer, 8}})
	checkStruct(t, p, "_KTHREAD", 72, false, []fieldWant{{"InitialStack", 24, profile.KindPointer, 8}, {"ApcState", 32, profile.KindStruct, 40}})
	checkStruct(t, p, "_HANDLE_TABLE", 40, false, []fieldWant{{"TableCode", 8, profile.KindBase, 8}, {"QuotaProcess", 16, profile.KindPointer, 8}})
	checkStruct(t, p, "_UNICODE_STRING", 16, false, []fieldWant{{"Length", 0, profile.KindBase, 2}, {"MaximumLength", 2, profile.KindBase, 2}, {"Buffer", 8, profile.KindPointer, 8}})

	// C++: base class, vtable pointer, methods, static and nested members.
	checkStruct(t, p, "Derived", 40, false, []fieldWant{
		{"BClass", 0, profile.KindStruct, 16},
		{"Inner", 16, profile.KindStruct, 16},
		{"Counter", 32, profile.KindBase, 8},
	})
	checkStruct(t, p, "Derived::Nested", 16, false, []fieldWant{{"Owner", 0, profile.KindPointer, 8}, {"State", 8, profile.KindEnum, 2}})
	if _, ok := p.Types["Derived"].Fields["Instances"]; ok {
		t.Error("static member converted as a field")
	}

	pool := isf.Enums["_POOL_TYPE"]
	wantPool := map[string]int64{"NonPagedPool": 0, "PagedPool": 1, "NonPagedPoolNx": 512, "PoolNegative": -5, "PoolBig": 0x12345}
	if pool.Size != 4 || pool.Base != "int" || len(pool.Constants) != len(wantPool) {
		t.Errorf("_POOL_TYPE %+v", pool)
	}
	for k, v := range wantPool {
		if pool.Constants[k] != v {
			t.Errorf("_POOL_TYPE.%s = %d, want %d", k, pool.Constants[k], v)
		}
	}
	if m := isf.Enums["Derived::Mode"]; m.Size != 2 || m.Base != "unsigned short" || m.Constants["Auto"] != 0xffff || m.Constants["On"] != 1 {
		t.Errorf("Derived::Mode %+v", m)
	}

	// Sections: .text 0x1000, .rdata 0x2000, .data 0x3000.
	for name, rva := range map[string]uint64{
		"NtCreateFile":                 0x1000 + 0,
		"NtWriteFile":                  0x1000 + 64,
		"PspInsertProcess":             0x1000 + 144,
		"MmCleanProcessAddressSpace":   0x1000 + 208,
		"ExpLookupHandleTableEntry":    0x1000 + 240,
		"CxxEntry":                     0x1000 + 304,
		"ObHeaderCookie":               0x3000 + 0,
		"PsActiveProcessHead":          0x3000 + 16,
		"PsInitialSystemProcess":       0x3000 + 32,
		"ObTypeIndexTable":             0x3000 + 48,
		"KiProcessorBlock0":            0x3000 + 560,
		"ObjectHeaderSample":           0x3000 + 704,
		"ObpKernelHandleTable":         0x3000 + 760,
		"??_7Derived@@6B@":             0x2000 + 0,
		"?GlobalDerived@@3UDerived@@A": 0x3000 + 768,
		"GlobalDerived":                0x3000 + 768, // undecorated like pdbconv
	} {
		if got, err := p.Symbol(name); err != nil || got != rva {
			t.Errorf("symbol %s = %#x (%v), want %#x", name, got, err, rva)
		}
	}
	// Every struct a field names exists, so no reference dangles.
	for _, s := range p.Types {
		for _, f := range s.Fields {
			for ty := &f.Type; ty != nil; ty = ty.Elem {
				if ty.Kind == profile.KindStruct {
					if _, ok := p.Types[ty.Name]; !ok {
						t.Errorf("%s.%s refers to missing %s", s.Name, f.Name, ty.Name)
					}
				}
			}
		}
	}
}

// The i686 build of the same sources: 4-byte pointers, "_"-decorated
// names (from llvm-pdbutil dump -types -publics testdata/kernel32.pdb).
func TestConvertKernel32(t *testing.T) {
	isf := convert(t, "kernel32.pdb")
	p := isf.Profile
	if w := isf.Metadata.Windows; w == nil || w.GUID != "F2312A3D09FF540C4C4C44205044422E" || w.Age != 1 || w.MachineType != 0x14c {
		t.Fatalf("metadata %+v", w)
	}
	if isf.BaseTypes["pointer"].Size != 4 {
		t.Errorf("pointer base type %+v", isf.BaseTypes["pointer"])
	}
	checkStruct(t, p, "_EPROCESS", 192, false, []fieldWant{
		{"UniqueProcessId", 56, profile.KindPointer, 4},
		{"ActiveProcessLinks", 60, profile.KindStruct, 8},
		{"Flags2", 68, profile.KindBase, 4},
		{"Self", 80, profile.KindPointer, 4},
		{"ObjectTable", 92, profile.KindPointer, 4},
		{"ImageFileName", 100, profile.KindArray, 15},
		{"Cookies", 120, profile.KindArray, 48},
		{"Callback", 176, profile.KindPointer, 4},
		{"EmptyTail", 184, profile.KindArray, 1},
	})
	checkStruct(t, p, "_OBJECT_HEADER", 48, false, []fieldWant{{"QuotaBlockCharged", 28, profile.KindPointer, 4}, {"Body", 40, profile.KindBase, 8}})
	for name, rva := range map[string]uint64{
		"_NtCreateFile":          0x1000,
		"NtCreateFile":           0x1000,
		"NtWriteFile":            0x1000 + 64,
		"_PsActiveProcessHead":   0x3000 + 8,
		"PsActiveProcessHead":    0x3000 + 8,
		"PsInitialSystemProcess": 0x3000 + 16,
		"ObTypeIndexTable":       0x3000 + 20,
		"ObpKernelHandleTable":   0x3000 + 456,
	} {
		if got, err := p.Symbol(name); err != nil || got != rva {
			t.Errorf("symbol %s = %#x (%v), want %#x", name, got, err, rva)
		}
	}
}

func TestParseInfo(t *testing.T) {
	f, err := pdb.Parse(fixture(t, "kernel.pdb"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := f.Info()
	if err != nil {
		t.Fatal(err)
	}
	// llvm-pdbutil dump -summary: Signature 3967969097, Age 1,
	// GUID {EC826749-924C-3CE7-4C4C-44205044422E}, 17 streams.
	if in.Signature != 3967969097 || in.Age != 1 || in.GUIDString() != "EC826749924C3CE74C4C44205044422E" || f.NumStreams() != 17 {
		t.Errorf("info %+v %s, %d streams", in, in.GUIDString(), f.NumStreams())
	}
	d, err := f.DBI()
	if err != nil {
		t.Fatal(err)
	}
	secs, err := f.Sections(d)
	if err != nil || len(secs) != 5 || secs[0].Name != ".text" || secs[0].VirtualAddress != 0x1000 || secs[0].VirtualSize != 0x1fe || secs[2].VirtualAddress != 0x3000 {
		t.Errorf("sections %+v %v", secs, err)
	}
	ty, err := f.Types()
	if err != nil || ty.Begin != 0x1000 {
		t.Fatalf("types %v", err)
	}
	// 0x1029 is _EPROCESS's definition.
	if kind, _, err := ty.Record(0x1029); err != nil || kind != 0x1505 {
		t.Errorf("record 0x1029: leaf %#x %v", kind, err)
	}
	if _, _, err := ty.Record(ty.Begin + pdb.TypeIndex(ty.Len())); !errors.Is(err, pdb.ErrFormat) {
		t.Errorf("record past the end: %v", err)
	}
}

// Truncations and corruptions of a real PDB fail with ErrFormat.
func TestMalformed(t *testing.T) {
	good := fixture(t, "kernel.pdb")
	cases := map[string][]byte{
		"empty":       nil,
		"magic only":  good[:32],
		"superblock":  good[:56],
		"first block": good[:4096],
		"half":        good[:len(good)/2],
	}
	bad := func(name string, at int, b ...byte) {
		c := bytes.Clone(good)
		copy(c[at:], b)
		cases[name] = c
	}
	bad("block size", 32, 0x33, 0x11, 0, 0)
	bad("directory bytes", 44, 0xff, 0xff, 0xff, 0x7f)
	bad("block map beyond file", 52, 0xff, 0xff, 0, 0)
	for name, data := range cases {
		if _, err := pdb.Convert(data, pdb.Options{}); !errors.Is(err, pdb.ErrFormat) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := pdb.Open(filepath.Join("testdata", "missing.pdb")); err == nil || errors.Is(err, pdb.ErrFormat) {
		t.Errorf("missing file: %v", err)
	}
}

func BenchmarkConvert(b *testing.B) {
	data := fixture(b, "kernel.pdb")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := pdb.Convert(data, pdb.Options{Database: "ntkrnlmp.pdb"}); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzPDB: any input converts or fails with ErrFormat; what converts is
// an ISF document the profile reader accepts.
func FuzzPDB(f *testing.F) {
	for _, name := range []string{"kernel.pdb", "kernel32.pdb"} {
		good := fixture(f, name)
		f.Add(good)
		for _, n := range []int{56, 4096, 3 * 4096, len(good) / 2, len(good) - 1} {
			f.Add(good[:n])
		}
		// Corrupt the superblock's directory size and block map, and
		// the start of each 4 KiB block (directory, TPI header...).
		for _, at := range []int{44, 52} {
			c := bytes.Clone(good)
			c[at] ^= 0x5a
			f.Add(c)
		}
		for at := 4096; at < len(good); at += 4096 {
			c := bytes.Clone(good)
			c[at+4] ^= 0xff
			f.Add(c)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		js, err := pdb.Convert(data, pdb.Options{Database: "fuzz.pdb"})
		if err != nil {
			if !errors.Is(err, pdb.ErrFormat) {
				t.Fatalf("error without ErrFormat: %v", err)
			}
			return
		}
		if len(js) > pdb.MaxISFBytes*2 {
			t.Fatalf("%d bytes of ISF from %d of PDB", len(js), len(data))
		}
		if _, err := profile.ParseISF(js); err != nil {
			t.Fatalf("converted ISF does not read back: %v", err)
		}
	})
}
