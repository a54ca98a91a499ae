package profile

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"

	"github.com/vmi-exporter/vmi-exporter/introspect/profile/pdb"
)

// sharedProfiles returns ../shared/profiles/windows beside the repository.
func sharedProfiles(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
	p := filepath.Join(dir, "..", "shared", "profiles", "windows")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Windows test profiles missing (expected beside the clone): %v", err)
	}
	return p
}

var realProfiles = []struct {
	guid  string
	build string
}{
	{"606FF669409B00F7FC8C61A9C1670129", "Windows 10 22H2"},
	{"0CE4A95C0CD782A7596B034D8648E585", "Windows 11 21H2"},
}

func TestReadRealISF(t *testing.T) {
	store := &SymbolStore{Dir: sharedProfiles(t)}
	for _, rp := range realProfiles {
		t.Run(rp.build, func(t *testing.T) {
			isf, err := store.Load(PDBInfo{Database: "ntkrnlmp.pdb", GUID: rp.guid, Age: 1})
			if err != nil {
				t.Fatal(err)
			}
			p := isf.Profile
			if w := isf.Metadata.Windows; w == nil || w.GUID != rp.guid || w.Age != 1 || w.Database != "ntkrnlmp.pdb" {
				t.Fatalf("metadata %+v", isf.Metadata.Windows)
			}
			if p.Name != "ntkrnlmp.pdb/"+rp.guid+"1" {
				t.Errorf("name %q", p.Name)
			}
			if len(p.Symbols) < 10000 || len(p.Types) < 1000 {
				t.Errorf("%d symbols, %d types", len(p.Symbols), len(p.Types))
			}
			for _, s := range []string{"NtCreateFile", "NtWriteFile", "PspInsertProcess", "MmCleanProcessAddressSpace", "PsInitialSystemProcess", "ObTypeIndexTable", "ObHeaderCookie"} {
				if a, err := p.Symbol(s); err != nil || a == 0 || a > 64<<20 {
					t.Errorf("symbol %s = %#x, %v (want an RVA)", s, a, err)
				}
			}
			// Facts of both builds (the same for 19041 and 22000).
			for _, c := range []struct {
				s, f string
				off  uint64
			}{
				{"_EPROCESS", "UniqueProcessId", 0x440},
				{"_EPROCESS", "ImageFileName", 0x5a8},
				{"_KPROCESS", "DirectoryTableBase", 0x28},
				{"_KPCR", "Prcb", 0x180},
				{"_OBJECT_HEADER", "Body", 0x30},
				{"_UNICODE_STRING", "Buffer", 8},
			} {
				if off, err := p.Offset(c.s, c.f); err != nil || off != c.off {
					t.Errorf("%s.%s = %#x, %v; want %#x", c.s, c.f, off, err, c.off)
				}
			}
			f, err := p.Field("_HANDLE_TABLE_ENTRY", "ObjectPointerBits")
			if err != nil {
				t.Fatal(err)
			}
			if f.Type.Kind != KindBitfield || f.Type.BitPos != 20 || f.Type.BitLen != 44 || f.Type.Size != 8 || f.Type.Elem.Name != "unsigned long long" {
				t.Errorf("ObjectPointerBits %+v", f.Type)
			}
			if s, _ := p.Struct("_HANDLE_TABLE_ENTRY"); !s.Union || s.Size != 16 {
				t.Errorf("_HANDLE_TABLE_ENTRY %+v", s)
			}
			f, _ = p.Field("_EPROCESS", "ImageFileName")
			if f.Type.Kind != KindArray || f.Type.Count != 15 || f.Type.Size != 15 || f.Type.Elem.Kind != KindBase {
				t.Errorf("ImageFileName %+v", f.Type)
			}
			f, _ = p.Field("_OBJECT_ATTRIBUTES", "ObjectName")
			if f.Type.Kind != KindPointer || f.Type.Size != 8 || f.Type.Elem == nil || f.Type.Elem.Name != "_UNICODE_STRING" || f.Type.Elem.Size != 16 {
				t.Errorf("ObjectName %+v", f.Type)
			}
			if bt := isf.BaseTypes["unsigned short"]; bt.Size != 2 || bt.Signed {
				t.Errorf("unsigned short %+v", bt)
			}
			if e, ok := isf.Enums["_POOL_TYPE"]; !ok || e.Constants["NonPagedPool"] != 0 || e.Constants["PagedPool"] != 1 {
				t.Errorf("_POOL_TYPE %+v", e)
			}
		})
	}
}

const tinyISF = `{"metadata":{"format":"6.1.0","windows":{"pdb":{"GUID":"00112233445566778899aabbccddeeff","age":3,"database":"ntkrnlmp.pdb","machine_type":34404}}},
"base_types":{"unsigned long":{"kind":"int","size":4,"signed":false,"endian":"little"},"pointer":{"kind":"int","size":8,"signed":false,"endian":"little"},"pointer32":{"kind":"int","size":4,"signed":false,"endian":"little"}},
"enums":{"E":{"base":"unsigned long","size":4,"constants":{"A":1,"B":-2}}},
"symbols":{"Foo":{"address":4096},"NoAddr":{"type":{"kind":"base","name":"unsigned long"}}},
"user_types":{"_S":{"kind":"struct","size":16,"fields":{"a":{"offset":0,"type":{"kind":"base","name":"unsigned long"}},
"b":{"offset":4,"type":{"kind":"bitfield","bit_position":3,"bit_length":5,"type":{"kind":"base","name":"unsigned long"}}},
"p":{"offset":8,"type":{"kind":"pointer","subtype":{"kind":"struct","name":"_S"}}},
"e":{"offset":12,"type":{"kind":"enum","name":"E"}},
"q":{"offset":0,"type":{"kind":"pointer","base":"pointer32","subtype":{"kind":"base","name":"unsigned long"}}}}}},
"extra":[1,2,3]}`

func TestParseISFSmall(t *testing.T) {
	isf, err := ParseISF([]byte(tinyISF))
	if err != nil {
		t.Fatal(err)
	}
	p := isf.Profile
	if p.Name != "ntkrnlmp.pdb/00112233445566778899AABBCCDDEEFF3" {
		t.Errorf("name %q", p.Name)
	}
	if p.Symbols["Foo"] != 4096 {
		t.Errorf("Foo %#x", p.Symbols["Foo"])
	}
	if _, ok := p.Symbols["NoAddr"]; ok {
		t.Error("symbol without address kept")
	}
	b, _ := p.Field("_S", "b")
	if b.Type.Kind != KindBitfield || b.Type.BitPos != 3 || b.Type.BitLen != 5 || b.Type.Size != 4 {
		t.Errorf("b %+v", b.Type)
	}
	ptr, _ := p.Field("_S", "p")
	if ptr.Type.Elem.Kind != KindStruct || ptr.Type.Elem.Size != 16 || ptr.Type.Size != 8 {
		t.Errorf("p %+v", ptr.Type)
	}
	if q, _ := p.Field("_S", "q"); q.Type.Kind != KindPointer || q.Type.Size != 4 {
		t.Errorf("q (a POINTER_32) %+v", q.Type)
	}
	e, _ := p.Field("_S", "e")
	if e.Type.Kind != KindEnum || e.Type.Size != 4 || isf.Enums["E"].Constants["B"] != -2 {
		t.Errorf("e %+v", e.Type)
	}
	// The same document xz-compressed.
	var buf bytes.Buffer
	w, _ := xz.NewWriter(&buf)
	w.Write([]byte(tinyISF))
	w.Close()
	isf2, err := ReadISF(&buf)
	if err != nil || isf2.Profile.Symbols["Foo"] != 4096 {
		t.Fatalf("xz: %v", err)
	}
}

func TestParseISFMalformed(t *testing.T) {
	for name, doc := range map[string]string{
		"not object":     `[1]`,
		"truncated":      `{"symbols":{"a":{"address":1}`,
		"bad kind":       `{"user_types":{"S":{"kind":"struct","size":1,"fields":{"x":{"offset":0,"type":{"kind":"weird"}}}}}}`,
		"no offset":      `{"user_types":{"S":{"kind":"struct","size":1,"fields":{"x":{"type":{"kind":"base","name":"char"}}}}}}`,
		"bitfield range": `{"base_types":{"char":{"kind":"char","size":1}},"user_types":{"S":{"kind":"struct","size":1,"fields":{"x":{"offset":0,"type":{"kind":"bitfield","bit_position":7,"bit_length":4,"type":{"kind":"base","name":"char"}}}}}}}`,
		"deep": `{"user_types":{"S":{"kind":"struct","size":1,"fields":{"x":{"offset":0,"type":` +
			strings.Repeat(`{"kind":"pointer","subtype":`, 20) + `{"kind":"base","name":"char"}` + strings.Repeat("}", 20) + `}}}}}`,
		"huge array": `{"base_types":{"long":{"kind":"int","size":8}},"user_types":{"S":{"kind":"struct","size":1,"fields":{"x":{"offset":0,"type":{"kind":"array","count":1099511627776,"subtype":{"kind":"base","name":"long"}}}}}}}`,
	} {
		if _, err := ParseISF([]byte(doc)); !errors.Is(err, ErrISF) {
			t.Errorf("%s: err %v, want ErrISF", name, err)
		}
	}
}

func FuzzParseISF(f *testing.F) {
	f.Add([]byte(tinyISF))
	f.Add([]byte(`{"user_types":{"S":{"kind":"union","size":8,"fields":{"x":{"offset":0,"type":{"kind":"array","count":2,"subtype":{"kind":"pointer","subtype":{"kind":"base","name":"void"}}}}}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		isf, err := ParseISF(b)
		if err != nil {
			return
		}
		for _, s := range isf.Profile.Types {
			for _, fl := range s.Fields {
				for e, d := fl.Type.Elem, 0; e != nil; e, d = e.Elem, d+1 {
					if d > MaxISFTypeDepth {
						t.Fatal("type deeper than bound")
					}
				}
			}
		}
	})
}

func TestCodeViewGUID(t *testing.T) {
	// GUID {606FF669-409B-00F7-FC8C-61A9C1670129} as stored in an RSDS record.
	cv := CodeView{PDB: "ntkrnlmp.pdb", Age: 1, GUID: [16]byte{0x69, 0xf6, 0x6f, 0x60, 0x9b, 0x40, 0xf7, 0x00, 0xfc, 0x8c, 0x61, 0xa9, 0xc1, 0x67, 0x01, 0x29}}
	if got := cv.Info().Key(); got != "606FF669409B00F7FC8C61A9C16701291" {
		t.Errorf("key %s", got)
	}
}

func TestSymbolStoreMissAndDownload(t *testing.T) {
	cv := CodeView{PDB: "ntkrnlmp.pdb", Age: 2, GUID: [16]byte{1, 2, 3}}
	var gotPath string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath = r.URL.Path
		w.Write([]byte("Microsoft C/C++ MSF 7.00\r\n\x1aDS\x00\x00\x00"))
	}))
	defer srv.Close()
	dir := t.TempDir()
	s := &SymbolStore{Dir: dir, Server: srv.URL + "/symbols"}
	// Only a superblock: downloaded, then conversion fails.
	_, err := s.ForCodeView(context.Background(), cv)
	if !errors.Is(err, ErrNoProfile) || !errors.Is(err, ErrPDBNotConverted) || !errors.Is(err, pdb.ErrFormat) {
		t.Fatalf("err %v", err)
	}
	want := "/symbols/ntkrnlmp.pdb/00030201000000000000000000000000" + "2/ntkrnlmp.pdb"
	if gotPath != want {
		t.Errorf("server got %s, want %s", gotPath, want)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "ntkrnlmp.pdb", "000302010000000000000000000000002", "ntkrnlmp.pdb")); err != nil || !bytes.HasPrefix(b, []byte("Microsoft C/C++ MSF")) {
		t.Errorf("stored PDB: %v", err)
	}

	// Offline: a port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s = &SymbolStore{Dir: t.TempDir(), Server: "http://" + addr}
	_, err = s.ForCodeView(context.Background(), cv)
	if !errors.Is(err, ErrSymbolServer) || !errors.Is(err, ErrNoProfile) || !strings.Contains(err.Error(), "offline") {
		t.Fatalf("offline err %v", err)
	}

	// HTTP 404.
	nf := httptest.NewServer(http.NotFoundHandler())
	defer nf.Close()
	s = &SymbolStore{Dir: t.TempDir(), Server: nf.URL}
	if _, err := s.Download(context.Background(), cv.Info()); !errors.Is(err, ErrSymbolServer) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("404 err %v", err)
	}

	// A PDB name from guest memory cannot escape the store.
	if _, err := s.Download(context.Background(), PDBInfo{Database: "../x", GUID: "00"}); !errors.Is(err, ErrNoProfile) {
		t.Fatalf("traversal err %v", err)
	}
	// A PDB already downloaded is not fetched again.
	s = &SymbolStore{Dir: dir, Server: "http://" + addr}
	if _, err := s.ForCodeView(context.Background(), cv); !errors.Is(err, ErrPDBNotConverted) || errors.Is(err, ErrSymbolServer) {
		t.Fatalf("cached PDB: %v", err)
	}
	// No server: a plain miss.
	s = &SymbolStore{Dir: t.TempDir()}
	if _, err := s.ForCodeView(context.Background(), cv); !errors.Is(err, ErrNoProfile) || errors.Is(err, ErrSymbolServer) {
		t.Fatalf("miss err %v", err)
	}
}

func BenchmarkReadISF(b *testing.B) {
	p := filepath.Join(sharedProfiles(b), "ntkrnlmp.pdb", "606FF669409B00F7FC8C61A9C1670129-1.json.xz")
	data, err := os.ReadFile(p)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadISF(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

func TestISFFile(t *testing.T) {
	p := filepath.Join(sharedProfiles(t), "ntkrnlmp.pdb", "606FF669409B00F7FC8C61A9C1670129-1.json.xz")
	cv := CodeView{PDB: "ntkrnlmp.pdb", Age: 1, GUID: [16]byte{0x69, 0xf6, 0x6f, 0x60, 0x9b, 0x40, 0xf7, 0x00, 0xfc, 0x8c, 0x61, 0xa9, 0xc1, 0x67, 0x01, 0x29}}
	if isf, err := ISFFile(p).ForCodeView(context.Background(), cv); err != nil || isf.Profile.Symbols["NtCreateFile"] == 0 {
		t.Fatalf("matching file: %v", err)
	}
	cv.Age = 2
	if _, err := ISFFile(p).ForCodeView(context.Background(), cv); !errors.Is(err, ErrNoProfile) {
		t.Fatalf("other age: %v", err)
	}
}
