package windows_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/internal/wintest"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/windows"
)

// forgeSize is the size of the kernel memory region each fuzz input
// overwrites. Inputs are pointers and structures placed there; pointers
// into it (seeded below) let the fuzzer build forged chains.
const forgeSize = 4 * introspect.PageSize

type forge struct {
	s    *scene
	at   introspect.Va // start of the forged region
	mu   sync.Mutex
	head [16]byte // the real PsActiveProcessHead
}

var (
	forgeOnce sync.Once
	theForge  *forge
	forgeErr  error
)

// getForge builds one Windows 10 guest per fuzzing process (from the
// embedded profile subset, which parses fast even with coverage
// instrumentation), with a region of kernel memory the fuzz inputs
// overwrite.
func getForge(t testing.TB) *forge {
	forgeOnce.Do(func() {
		defer func() {
			if r := recover(); r != nil {
				forgeErr = fmt.Errorf("%v", r)
			}
		}()
		s := newScene(t, "win10-subset")
		at, err := s.g.Alloc(forgeSize, introspect.PageSize)
		if err != nil {
			forgeErr = err
			return
		}
		f := &forge{s: s, at: at}
		if err := s.g.Kernel.Read(s.g.Symbol("PsActiveProcessHead"), f.head[:]); err != nil {
			forgeErr = err
			return
		}
		theForge = f
	})
	if forgeErr != nil {
		t.Fatal(forgeErr)
	}
	return theForge
}

// load copies data into the forged region (zero-padded) and forgets
// everything cached from guest memory.
func (f *forge) load(t testing.TB, data []byte) {
	buf := make([]byte, forgeSize)
	copy(buf, data)
	if err := f.s.g.Kernel.Write(f.at, buf); err != nil {
		t.Fatal(err)
	}
	f.s.os.Memory().Cache.Flush()
	f.s.os.FlushCaches()
}

func (f *forge) root() introspect.Pa { return f.s.g.Kernel.Root }

// seed is a forged region under construction.
type seed struct {
	f *forge
	b []byte
}

func (f *forge) newSeed() *seed { return &seed{f: f, b: make([]byte, forgeSize)} }

func (s *seed) put(off introspect.Va, v uint64) {
	binary.LittleEndian.PutUint64(s.b[off:], v)
}
func (s *seed) va(off introspect.Va) uint64 { return uint64(s.f.at + off) }

// handleEntry encodes a header address as the Win10 profile does.
func (f *forge) handleEntry(hdr introspect.Va) uint64 {
	fl, _ := f.s.g.Prof.Field("_HANDLE_TABLE_ENTRY", "ObjectPointerBits")
	return (uint64(hdr)&(1<<48-1))>>4<<fl.Type.BitPos | 1
}

// Seeds of each target; also written to testdata/fuzz by
// TestWriteFuzzSeeds when WINDOWS_WRITE_FUZZ_SEEDS is set.
func handleSeeds(f *forge) [][]byte {
	g := f.s.g
	ot := g.Off("_EPROCESS", "ObjectTable")
	tc := g.Off("_HANDLE_TABLE", "TableCode")
	var out [][]byte
	// Compact layout (inputs stay small, which keeps fuzzing fast):
	// HANDLE_TABLE at 0x600, table pages at 0x700, 0x800, 0x900, a forged
	// header at 0xa00.
	for level := 0; level < 3; level++ {
		s := f.newSeed()
		s.put(ot, s.va(0x600))
		s.put(0x600+tc, s.va(0x700)|uint64(level))
		leaf := introspect.Va(0x700)
		if level > 0 {
			s.put(0x700, s.va(0x800))
			leaf = 0x800
		}
		if level > 1 {
			s.put(0x800, s.va(0x900))
			leaf = 0x900
		}
		// handle 4 -> the real file; handle 8 -> a forged header.
		s.put(leaf+16, f.handleEntry(f.s.file-g.Off("_OBJECT_HEADER", "Body")))
		s.put(leaf+32, f.handleEntry(f.at+0xa00))
		out = append(out, s.b[:0xa40])
	}
	return out
}

// headerBody is where FuzzObjectHeader's object body lies in the region.
const headerBody introspect.Va = 0x200

func headerSeeds(f *forge) [][]byte {
	g := f.s.g
	body := headerBody
	hdr := body - g.Off("_OBJECT_HEADER", "Body")
	s := f.newSeed()
	// A named File object whose name info lies in the forged region and
	// whose directory is the real \Device directory.
	idx := wintest.TypeIndexes["File"] ^ byte((f.at+hdr)>>8) ^ wintest.HeaderCookie
	s.b[hdr+g.Off("_OBJECT_HEADER", "TypeIndex")] = idx
	s.b[hdr+g.Off("_OBJECT_HEADER", "InfoMask")] = 2
	ni := hdr - 0x20
	s.put(ni+g.Off("_OBJECT_HEADER_NAME_INFO", "Directory"), uint64(g.DeviceDir))
	binary.LittleEndian.PutUint16(s.b[ni+8:], 8)
	s.put(ni+16, s.va(0x100))
	copy(s.b[0x100:], "x\x00y\x00z\x00w\x00")
	// FILE_OBJECT fields.
	s.put(body+g.Off("_FILE_OBJECT", "DeviceObject"), uint64(g.Volume))
	fn := body + g.Off("_FILE_OBJECT", "FileName")
	binary.LittleEndian.PutUint16(s.b[fn:], 4)
	s.put(fn+8, s.va(0x100))
	return [][]byte{s.b[:0x300]}
}

func unicodeSeeds(f *forge) [][]byte {
	s := f.newSeed()
	binary.LittleEndian.PutUint16(s.b[0:], 6)
	binary.LittleEndian.PutUint16(s.b[2:], 8)
	s.put(8, s.va(0x40))
	copy(s.b[0x40:], "a\x00\\\x00b\x00")
	// An OBJECT_ATTRIBUTES at 0x100 naming that string, root handle 0x48.
	oa := introspect.Va(0x100)
	s.put(oa+f.s.g.Off("_OBJECT_ATTRIBUTES", "ObjectName"), s.va(0))
	s.put(oa+f.s.g.Off("_OBJECT_ATTRIBUTES", "RootDirectory"), 0x48)
	return [][]byte{s.b[:0x200]}
}

func listSeeds(f *forge) [][]byte {
	links := f.s.g.Off("_EPROCESS", "ActiveProcessLinks")
	head := uint64(f.s.g.Symbol("PsActiveProcessHead"))
	s := f.newSeed()
	// Three forged, overlapping processes at 0, 0x100, 0x200, the last
	// back to head.
	for i := introspect.Va(0); i < 3; i++ {
		next := s.va((i+1)*0x100 + links)
		if i == 2 {
			next = head
		}
		s.put(i*0x100+links, next)
		s.put(i*0x100+f.s.g.Off("_EPROCESS", "UniqueProcessId"), uint64(100+i))
	}
	loop := f.newSeed()
	loop.put(links, loop.va(links))
	return [][]byte{s.b[:0x800], loop.b[:0x500]}
}

func FuzzHandleTable(fz *testing.F) {
	f := getForge(fz)
	for _, s := range handleSeeds(f) {
		fz.Add(s, uint64(4))
		fz.Add(s, uint64(8))
	}
	fz.Fuzz(func(t *testing.T, data []byte, handle uint64) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.load(t, data)
		obj, err := f.s.os.HandleToObject(f.root(), f.at, handle)
		if err != nil {
			return
		}
		f.s.os.ObjectTypeName(f.root(), obj)
		f.s.os.ObjectPath(f.root(), obj)
		f.s.os.FileObjectPath(f.root(), obj)
	})
}

func FuzzObjectHeader(fz *testing.F) {
	f := getForge(fz)
	for _, s := range headerSeeds(f) {
		fz.Add(s)
	}
	fz.Fuzz(func(t *testing.T, data []byte) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.load(t, data)
		body := f.at + headerBody
		f.s.os.ObjectTypeName(f.root(), body)
		f.s.os.ObjectName(f.root(), body)
		f.s.os.ObjectPath(f.root(), body)
		f.s.os.FileObjectPath(f.root(), body)
	})
}

func FuzzUnicodeString(fz *testing.F) {
	f := getForge(fz)
	for _, s := range unicodeSeeds(f) {
		fz.Add(s)
	}
	fz.Fuzz(func(t *testing.T, data []byte) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.load(t, data)
		if s, err := f.s.os.UnicodeString(f.root(), f.at); err == nil && len(s) > 3*windows.MaxUnicodeBytes/2 {
			t.Fatalf("string of %d bytes", len(s))
		}
		f.s.os.ObjectAttributesName(f.root(), f.s.notepad.EPROCESS, f.at+0x100)
	})
}

func FuzzProcessList(fz *testing.F) {
	f := getForge(fz)
	for _, s := range listSeeds(f) {
		fz.Add(s)
	}
	head := f.s.g.Symbol("PsActiveProcessHead")
	links := f.s.g.Off("_EPROCESS", "ActiveProcessLinks")
	fz.Fuzz(func(t *testing.T, data []byte) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.load(t, data)
		var h [16]byte
		binary.LittleEndian.PutUint64(h[:], uint64(f.at+links))
		if err := f.s.g.Kernel.Write(head, h[:]); err != nil {
			t.Fatal(err)
		}
		defer f.s.g.Kernel.Write(head, f.head[:])
		procs, _ := f.s.os.Processes(f.root())
		if len(procs) > windows.MaxProcesses {
			t.Fatalf("%d processes", len(procs))
		}
		for _, p := range procs {
			f.s.os.ProcessID(f.root(), p)
			f.s.os.ImageFileName(f.root(), p)
		}
	})
}

// TestWriteFuzzSeeds regenerates the committed seed corpora (which depend
// on the builder's deterministic layout) when WINDOWS_WRITE_FUZZ_SEEDS=1.
// Otherwise it checks that each seed still decodes as intended.
func TestWriteFuzzSeeds(t *testing.T) {
	f := getForge(t)
	write := os.Getenv("WINDOWS_WRITE_FUZZ_SEEDS") == "1"
	for name, seeds := range map[string][][]byte{
		"FuzzHandleTable": handleSeeds(f), "FuzzObjectHeader": headerSeeds(f),
		"FuzzUnicodeString": unicodeSeeds(f), "FuzzProcessList": listSeeds(f),
	} {
		if !write {
			continue
		}
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if name == "FuzzHandleTable" {
				body += "uint64(4)\n"
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The seeds are meaningful: they decode.
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, s := range handleSeeds(f) {
		f.load(t, s)
		if obj, err := f.s.os.HandleToObject(f.root(), f.at, 4); err != nil || obj != f.s.file {
			t.Errorf("handle seed %d: %v %v", i, obj, err)
		}
	}
	f.load(t, headerSeeds(f)[0])
	if p, err := f.s.os.ObjectPath(f.root(), f.at+headerBody); err != nil || p != `\Device\xyzw` {
		t.Errorf("header seed path %q %v", p, err)
	}
	if typ, err := f.s.os.ObjectTypeName(f.root(), f.at+headerBody); err != nil || typ != "File" {
		t.Errorf("header seed type %q %v", typ, err)
	}
	f.load(t, unicodeSeeds(f)[0])
	if n, ok, err := f.s.os.ObjectAttributesName(f.root(), f.s.notepad.EPROCESS, f.at+0x100); err != nil || !ok || n != f.s.g.VolumePath+`\Users\test\a\b` {
		t.Errorf("OA seed %q %v %v", n, ok, err)
	}
}

// FuzzSetInformation runs the NtSetInformationFile decoders on forged
// FILE_RENAME_INFORMATION and FILE_DISPOSITION_INFORMATION(_EX) buffers of
// any claimed length: errors, never a panic or a name beyond the bound.
func FuzzSetInformation(fz *testing.F) {
	f := getForge(fz)
	s := f.newSeed()
	name := []byte("x\x00.\x00l\x00")
	binary.LittleEndian.PutUint32(s.b[16:], uint32(len(name)))
	copy(s.b[20:], name)
	fz.Add(s.b[:0x40], uint64(20+len(name)), uint64(windows.FileRenameInformation))
	root := f.newSeed()
	copy(root.b, s.b[:0x40])
	root.put(8, 0x48) // RootDirectory handle
	fz.Add(root.b[:0x40], uint64(0x40), uint64(windows.FileRenameInformationEx))
	fz.Add([]byte{1}, uint64(1), uint64(windows.FileDispositionInformation))
	fz.Add([]byte{1, 0, 0, 0}, uint64(4), uint64(windows.FileDispositionInformationEx))
	fz.Fuzz(func(t *testing.T, data []byte, length, class uint64) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.load(t, data)
		if n, err := f.s.os.RenameTarget(f.root(), f.s.notepad.EPROCESS, f.at, length); err == nil && len(n) > 3*windows.MaxUnicodeBytes/2+4096 {
			t.Fatalf("name of %d bytes", len(n))
		}
		f.s.os.DispositionDeletes(f.root(), f.at, class)
	})
}
