package vmlinux

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

var (
	debianImageOnce sync.Once
	debianImage     *Image
	debianImageErr  error
)

// parsedDebian parses the Debian image once for all tests.
func parsedDebian(t *testing.T) *Image {
	t.Helper()
	path := debianVmlinuz(t)
	debianImageOnce.Do(func() {
		debianImage, debianImageErr = Open(path)
	})
	if debianImageErr != nil {
		t.Fatal(debianImageErr)
	}
	return debianImage
}

func TestDebianImage(t *testing.T) {
	path := debianVmlinuz(t)
	im := parsedDebian(t)
	t.Logf("%s: %s, %v, %d symbols", path, im.Banner, im.Compression, len(im.Kallsyms.Symbols))

	if im.Boot == nil || im.Boot.Version < 0x020f {
		t.Fatalf("boot header %+v, want protocol 2.15+", im.Boot)
	}
	if os.Getenv("VMI_EXPORTER_VMLINUZ") == "" && im.Compression != CompressionLZ4 {
		t.Errorf("compression %v, want lz4 (Debian's cloud kernel)", im.Compression)
	}
	release := strings.TrimPrefix(filepath.Base(path), "vmlinuz-")
	if !strings.HasPrefix(im.Banner, "Linux version "+release+" ") {
		t.Errorf("banner %q does not name release %s", im.Banner, release)
	}
	if !strings.HasPrefix(im.Boot.KernelVersion, release+" ") {
		t.Errorf("setup header version %q does not name release %s", im.Boot.KernelVersion, release)
	}
	// The banner lies in .rodata and the bytes at its address read it.
	ro, roSize, ok := im.Section(".rodata")
	if !ok || im.BannerAddr < ro || im.BannerAddr >= ro+roSize {
		t.Errorf("linux_banner %#x outside .rodata [%#x, +%#x)", im.BannerAddr, ro, roSize)
	}
	b, err := im.ReadAt(im.BannerAddr, 14)
	if err != nil || string(b) != "Linux version " {
		t.Errorf("bytes at linux_banner: %q, %v", b, err)
	}
	if len(im.Segments) == 0 || im.Text != im.Segments[0].VAddr || im.Segments[0].PAddr != 0x1000000 {
		t.Errorf("_text %#x, segments %+v: want _text at the first LOAD, physical 16 MiB", im.Text, im.Segments)
	}
}

func TestDebianKallsyms(t *testing.T) {
	im := parsedDebian(t)
	k := im.Kallsyms
	if n := len(k.Symbols); n < 50000 || n > MaxKallsyms {
		t.Fatalf("%d symbols", n)
	}
	if !k.AbsolutePercpu || k.RelativeBase != im.Text {
		t.Errorf("AbsolutePercpu %v, relative base %#x (want true, _text %#x)", k.AbsolutePercpu, k.RelativeBase, im.Text)
	}
	in := func(section, sym string) {
		t.Helper()
		a, ok := k.Lookup(sym)
		if !ok {
			t.Errorf("no symbol %s", sym)
			return
		}
		s, size, ok := im.Section(section)
		if !ok || a < s || a >= s+size {
			t.Errorf("%s = %#x, not in %s [%#x, +%#x)", sym, a, section, s, size)
		}
	}
	for _, fn := range []string{"do_sys_openat2", "vfs_write", "ksys_write", "wake_up_new_task", "do_exit", "taskstats_exit", "vfs_writev", "entry_SYSCALL_64", "_stext"} {
		in(".text", fn)
	}
	in(".rodata", "linux_banner")
	in(".rodata", "__per_cpu_offset") // __ro_after_init lands in .rodata on x86
	in(".data", "init_task")
	in(".data", "init_fs")
	// Per-CPU symbols are offsets into the per-CPU area (absolute).
	in(".data..percpu", currentTaskSymbol(k))
}

// TestDebianKallsymsMatchKsymtab checks the decoded table against an
// independent source in the same image: __ksymtab, the exported-symbol
// table, whose entries hold place-relative offsets to each exported
// symbol and to its name in __ksymtab_strings.
func TestDebianKallsymsMatchKsymtab(t *testing.T) {
	checkKsymtab(t, parsedDebian(t))
}

func checkKsymtab(t *testing.T, im *Image) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(im.ELF))
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]uint64{}
	for _, sec := range []string{"__ksymtab", "__ksymtab_gpl"} {
		s := f.Section(sec)
		data, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		// struct kernel_symbol { int value_offset, name_offset, namespace_offset; }
		for off := 0; off+12 <= len(data); off += 12 {
			at := s.Addr + uint64(off)
			value := at + uint64(int64(int32(binary.LittleEndian.Uint32(data[off:]))))
			nameAt := at + 4 + uint64(int64(int32(binary.LittleEndian.Uint32(data[off+4:]))))
			nb, err := im.ReadAt(nameAt, 256)
			if err != nil {
				t.Fatalf("%s entry %d: %v", sec, off/12, err)
			}
			end := bytes.IndexByte(nb, 0)
			if end < 0 {
				t.Fatalf("%s entry %d: name without NUL", sec, off/12)
			}
			names[string(nb[:end])] = value
		}
	}
	if len(names) < 5000 {
		t.Fatalf("only %d exported symbols", len(names))
	}
	syms := im.Kallsyms.Map()
	bad := 0
	for name, want := range names {
		if got, ok := syms[name]; !ok || got != want {
			if bad++; bad <= 5 {
				t.Errorf("%s: kallsyms %#x (%v), __ksymtab %#x", name, got, ok, want)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d exported symbols disagree", bad, len(names))
	}
	t.Logf("%d exported symbols agree with kallsyms", len(names))
}

func TestDebianBTFProfile(t *testing.T) {
	im := parsedDebian(t)
	p, err := BuildProfile(im)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != im.Banner {
		t.Errorf("profile name %q, want the banner", p.Name)
	}
	checkLinuxProfile(t, p)
}

// checkLinuxProfile checks the symbols and types the Linux OS layer uses.
func checkLinuxProfile(t *testing.T, p *profile.Profile) {
	t.Helper()
	if _, err := p.Symbol("current_task"); err != nil {
		// Since 6.2 (and in some stable backports) current_task is a
		// member of the per-CPU pcpu_hot.
		if _, err := p.Offset("pcpu_hot", "current_task"); err != nil {
			t.Errorf("neither current_task nor pcpu_hot.current_task: %v", err)
		}
	}
	for _, sym := range []string{"linux_banner", "init_task", "__per_cpu_offset", "do_sys_openat2", "vfs_write", "ksys_write", "wake_up_new_task", "do_exit", "taskstats_exit", "vfs_writev", "entry_SYSCALL_64", "init_fs", "_text", "_etext", "init_top_pgt"} {
		if _, err := p.Symbol(sym); err != nil {
			t.Error(err)
		}
	}
	fields := map[string][]string{
		"task_struct":       {"pid", "tgid", "comm", "real_parent", "parent", "files", "mm", "fs", "tasks", "flags", "__state"},
		"files_struct":      {"fdt"},
		"fdtable":           {"max_fds", "fd"},
		"file":              {"f_path", "f_inode"},
		"path":              {"dentry", "mnt"},
		"dentry":            {"d_name", "d_parent", "d_inode"},
		"qstr":              {"name", "len", "hash"},
		"mount":             {"mnt_mountpoint", "mnt_parent", "mnt"},
		"vfsmount":          {"mnt_root", "mnt_sb"},
		"fs_struct":         {"root", "pwd"},
		"mm_struct":         {"pgd", "exe_file"},
		"list_head":         {"next", "prev"},
		"pt_regs":           {"di", "si", "dx", "ip", "sp"},
		"filename":          {"name"},
		"open_how":          {"flags", "mode"},
		"kernel_clone_args": {"flags"},
	}
	for s, fs := range fields {
		for _, f := range fs {
			if _, err := p.Field(s, f); err != nil {
				t.Error(err)
			}
		}
	}
	// Spot checks of shapes, not build-specific offsets.
	if f, err := p.Field("task_struct", "comm"); err == nil {
		if f.Type.Kind != profile.KindArray || f.Type.Count != 16 || f.Type.Elem == nil || f.Type.Elem.Size != 1 {
			t.Errorf("task_struct.comm type %+v, want char[16]", f.Type)
		}
	}
	if f, err := p.Field("task_struct", "real_parent"); err == nil {
		if f.Type.Kind != profile.KindPointer || f.Type.Elem == nil || f.Type.Elem.Name != "task_struct" {
			t.Errorf("task_struct.real_parent type %+v, want *task_struct", f.Type)
		}
	}
	if f, err := p.Field("mount", "mnt"); err == nil {
		if f.Type.Kind != profile.KindStruct || f.Type.Name != "vfsmount" || f.Offset == 0 {
			t.Errorf("mount.mnt %+v, want an embedded struct vfsmount after the hash list", f)
		}
	}
	// qstr's len sits in an anonymous struct inside an anonymous union:
	// flattening must place it right after hash (little-endian).
	hash, _ := p.Offset("qstr", "hash")
	ln, _ := p.Offset("qstr", "len")
	name, _ := p.Offset("qstr", "name")
	if hash != 0 || ln != 4 || name != 8 {
		t.Errorf("qstr hash/len/name at %d/%d/%d, want 0/4/8", hash, ln, name)
	}
	if sz, _ := p.Size("task_struct"); sz < 1024 {
		t.Errorf("task_struct size %d", sz)
	}
	// A bitfield: task_struct.in_execve.
	if f, err := p.Field("task_struct", "in_execve"); err != nil {
		t.Error(err)
	} else if f.Type.Kind != profile.KindBitfield || f.Type.BitLen != 1 {
		t.Errorf("task_struct.in_execve %+v, want a 1-bit bitfield", f)
	}
}

func TestDebianProfileCache(t *testing.T) {
	path := debianVmlinuz(t)
	c := &profile.Cache{Dir: t.TempDir()}
	built, err := Profile(path, Options{Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Path(built.Name)); err != nil {
		t.Fatalf("not cached: %v", err)
	}
	cached, err := Profile(path, Options{Cache: c})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(built, cached) {
		t.Fatal("profile from cache differs from the built one")
	}
	// The OS layer finds the profile by the banner it reads in the guest.
	byBanner, err := c.Load(built.Name)
	if err != nil || len(byBanner.Types) != len(built.Types) {
		t.Fatalf("Load(banner): %v", err)
	}
	checkLinuxProfile(t, cached)
}

func TestDebianOverrides(t *testing.T) {
	path := debianVmlinuz(t)
	dir := t.TempDir()
	// Debian's package ships a stub System.map: a clear error, not a
	// silently empty override.
	if os.Getenv("VMI_EXPORTER_VMLINUZ") == "" {
		stub := debianKernel(t).SystemMap
		if _, err := Profile(path, Options{SystemMap: stub}); !errors.Is(err, profile.ErrSystemMap) {
			t.Errorf("stub System.map: err = %v, want ErrSystemMap", err)
		}
	}
	sm := filepath.Join(dir, "System.map")
	if err := os.WriteFile(sm, []byte("ffffffff81000000 T _text\nffffffff8134a000 T do_sys_openat2\nffffffff89000000 t only_in_map\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	over := profile.New("override")
	over.Symbols["vfs_write"] = 0x1234
	over.Types["qstr"] = &profile.Struct{Name: "qstr", Size: 99}
	p, err := Profile(path, Options{SystemMap: sm, Override: over, Cache: &profile.Cache{Dir: dir}})
	if err != nil {
		t.Fatal(err)
	}
	for sym, want := range map[string]uint64{"do_sys_openat2": 0xffffffff8134a000, "only_in_map": 0xffffffff89000000, "vfs_write": 0x1234} {
		if got, _ := p.Symbol(sym); got != want {
			t.Errorf("%s = %#x, want %#x", sym, got, want)
		}
	}
	if sz, _ := p.Size("qstr"); sz != 99 {
		t.Errorf("qstr not overridden: size %d", sz)
	}
	// A Volatility 3 ISF file overrides symbols and whole structs.
	p, err = Profile(path, Options{ISF: filepath.Join("testdata", "linux-override.isf.json"), Cache: &profile.Cache{Dir: dir}})
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := p.Symbol("only_in_isf"); a != 18446744071582000016 {
		t.Errorf("only_in_isf = %#x", a)
	}
	if sz, _ := p.Size("qstr"); sz != 24 {
		t.Errorf("qstr from ISF: size %d, want 24", sz)
	}
	if off, _ := p.Offset("qstr", "name"); off != 16 {
		t.Errorf("qstr.name from ISF at %d, want 16", off)
	}
	if off, _ := p.Offset("task_struct", "pid"); off == 0 {
		t.Error("task_struct lost: ISF must override only what it has")
	}
	if _, err := Profile(path, Options{ISF: filepath.Join("testdata", "missing.json")}); err == nil {
		t.Error("missing ISF: no error")
	}
	// Overrides do not leak into the cache.
	again, err := Profile(path, Options{Cache: &profile.Cache{Dir: dir}})
	if err != nil {
		t.Fatal(err)
	}
	if sz, _ := again.Size("qstr"); sz != 16 {
		t.Errorf("cached qstr size %d, want 16", sz)
	}
}

func BenchmarkDecompressDebian(b *testing.B) {
	raw, err := os.ReadFile(debianVmlinuz(b))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	cpu := startCPU()
	for b.Loop() {
		if _, _, _, err := Extract(raw); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b)
}

func BenchmarkKallsymsDebian(b *testing.B) {
	raw, err := os.ReadFile(debianVmlinuz(b))
	if err != nil {
		b.Fatal(err)
	}
	vmlinux, _, _, err := Extract(raw)
	if err != nil {
		b.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		b.Fatal(err)
	}
	ro := f.Section(".rodata")
	data, err := ro.Data()
	if err != nil {
		b.Fatal(err)
	}
	var n int
	cpu := startCPU()
	for b.Loop() {
		k, err := ParseKallsyms(data, ro.Addr)
		if err != nil {
			b.Fatal(err)
		}
		n = len(k.Symbols)
	}
	cpu.report(b)
	b.ReportMetric(float64(n), "symbols")
}

func BenchmarkBTFDebian(b *testing.B) {
	im := benchImage(b)
	b.Run("load", func(b *testing.B) {
		cpu := startCPU()
		for b.Loop() {
			if _, err := im.BTF(); err != nil {
				b.Fatal(err)
			}
		}
		cpu.report(b)
	})
	b.Run("convert", func(b *testing.B) {
		var n int
		cpu := startCPU()
		for b.Loop() {
			spec, err := im.BTF()
			if err != nil {
				b.Fatal(err)
			}
			types, err := profile.BTFTypes(spec)
			if err != nil {
				b.Fatal(err)
			}
			n = len(types)
		}
		cpu.report(b)
		b.ReportMetric(float64(n), "structs")
	})
}

func benchImage(b *testing.B) *Image {
	b.Helper()
	im, err := Open(debianVmlinuz(b))
	if err != nil {
		b.Fatal(err)
	}
	return im
}

// BenchmarkBuildFromImage is the cold path: decompress, kallsyms, BTF.
func BenchmarkBuildFromImage(b *testing.B) {
	path := debianVmlinuz(b)
	cpu := startCPU()
	for b.Loop() {
		if _, err := Profile(path, Options{}); err != nil {
			b.Fatal(err)
		}
	}
	cpu.report(b)
}

// BenchmarkLoadFromCache is the warm path from the image file (read and
// hash the image, then decode the cached profile) and from the banner
// alone (what the OS layer does with a running guest).
func BenchmarkLoadFromCache(b *testing.B) {
	path := debianVmlinuz(b)
	c := &profile.Cache{Dir: b.TempDir()}
	p, err := Profile(path, Options{Cache: c})
	if err != nil {
		b.Fatal(err)
	}
	if fi, err := os.Stat(c.Path(p.Name)); err == nil {
		b.Logf("cache file %d bytes", fi.Size())
	}
	b.Run("image", func(b *testing.B) {
		cpu := startCPU()
		for b.Loop() {
			if _, err := Profile(path, Options{Cache: c}); err != nil {
				b.Fatal(err)
			}
		}
		cpu.report(b)
	})
	b.Run("banner", func(b *testing.B) {
		cpu := startCPU()
		for b.Loop() {
			if _, err := c.Load(p.Name); err != nil {
				b.Fatal(err)
			}
		}
		cpu.report(b)
	})
}

// cpuTimer reports the process's CPU time per operation next to ns/op:
// on a shared, loaded machine wall time varies several-fold, CPU time
// much less. It includes GC and helper goroutines (parallel LZ4 blocks).
type cpuTimer struct{ start time.Duration }

func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func startCPU() cpuTimer { return cpuTimer{processCPU()} }

func (c cpuTimer) report(b *testing.B) {
	if b.N > 0 {
		b.ReportMetric(float64(processCPU()-c.start)/float64(b.N), "cpu-ns/op")
	}
}

// currentTaskSymbol returns the per-CPU symbol that holds the current task:
// current_task up to 6.1, pcpu_hot (whose member it became) later.
func currentTaskSymbol(k *Kallsyms) string {
	if _, ok := k.Lookup("current_task"); ok {
		return "current_task"
	}
	return "pcpu_hot"
}
