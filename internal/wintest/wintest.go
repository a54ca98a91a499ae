// Package wintest builds synthetic Windows x64 guests on the software
// hypervisor model (introspect/driver/sim) for tests and benchmarks.
//
// The layout is driven by a real kernel profile: every structure offset and
// size, every symbol RVA and the PDB GUID/age come from the profile, so a
// guest built from the Windows 10 profile is laid out as that build lays out
// its memory. The builder writes: page tables (kernel half shared by all
// processes), a kernel image with MZ/PE headers, a debug directory and an
// RSDS CodeView record, a KPCR per vCPU, EPROCESS/KTHREAD pairs on
// PsActiveProcessHead, handle tables of level 0, 1 or 2, object headers with
// name info and (when the profile has ObHeaderCookie) cookie-encoded type
// indexes, the object directory \Device with a volume device, file objects,
// and OBJECT_ATTRIBUTES in user memory.
package wintest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"unicode/utf16"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/sim"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// Address space layout of the synthetic guest. All kernel addresses share
// one PML4 entry so that processes created later see kernel mappings.
const (
	KernelBase introspect.Va = 0xfffff806_1c400000
	poolBase   introspect.Va = 0xfffff80a_00000000
	userBase   introspect.Va = 0x0000_0200_0000_0000
	// TEB is the user GS base of every thread (unmapped; only its value
	// matters, for choosing between the GS bases).
	TEB introspect.Va = 0x0000_00a0_1234_5000
	// HeaderCookie is the guest's ObHeaderCookie value.
	HeaderCookie byte = 0x5d
	// CodeBytes are written at every kernel function (mov [rsp+8], rbx).
	codeBytes = "\x48\x89\x5c\x24\x08"
)

// TypeIndexes are the ObTypeIndexTable slots of the object types the
// builder creates (those of Windows 10 19041).
var TypeIndexes = map[string]uint8{
	"Type": 2, "Directory": 3, "Process": 7, "Thread": 8, "Event": 16, "Device": 33, "File": 37, "Key": 44,
}

// Options configure a Guest.
type Options struct {
	VCPUs  int    // default 1
	Frames int    // guest RAM in frames, default 8192 (32 MiB)
	Seed   uint64 // scheduler seed
	// Latency is sim.Config.Latency: how often a raised event waits while
	// other vCPUs run.
	Latency float64
}

// Guest is a synthetic Windows guest on a sim.Machine.
type Guest struct {
	M        *sim.Machine
	Prof     *profile.Profile
	Kernel   *sim.AddressSpace // the System process's address space
	Base     introspect.Va
	CodeView profile.CodeView
	// KPCR of each vCPU.
	KPCR []introspect.Va
	// System is the System process (PID 4).
	System *Process
	// Directories and the volume device.
	RootDir, DeviceDir, Volume introspect.Va
	// VolumePath is the volume device's object path.
	VolumePath string

	cookie  bool
	types   map[uint8]introspect.Va
	pool    introspect.Va
	poolEnd introspect.Va
}

// Process is a synthetic process.
type Process struct {
	EPROCESS    introspect.Va
	Thread      introspect.Va
	Stack       introspect.Va // top of the kernel stack
	AS          *sim.AddressSpace
	UserRoot    introspect.Pa // UserDirectoryTableBase, when the build has it
	PID, PPID   uint64
	Name        string
	ImageBase   introspect.Va
	PEB         introspect.Va
	HandleTable introspect.Va
	Level       int // handle table level

	tableTop introspect.Va
	user     introspect.Va
}

// ProfileDir returns ../shared/profiles/windows beside the repository that
// holds the working directory.
func ProfileDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("wintest: go.mod not found above the working directory")
		}
		dir = parent
	}
	return filepath.Join(dir, "..", "shared", "profiles", "windows"), nil
}

// Profiles lists the real profiles under ProfileDir by build name.
var Profiles = []struct{ Name, File string }{
	{"win10-22H2", "ntkrnlmp.pdb/606FF669409B00F7FC8C61A9C1670129-1.json.xz"},
	{"win11-21H2", "ntkrnlmp.pdb/0CE4A95C0CD782A7596B034D8648E585-1.json.xz"},
}

// LoadProfile reads a profile by name: one of Profiles, "win7" for the
// hand-written Windows 7 SP1 style fragment in this package's testdata, or
// "win10-subset" for the embedded subset of the Windows 10 profile.
// Profiles are cached: callers must not modify them.
func LoadProfile(name string) (*profile.ISF, error) {
	profMu.Lock()
	defer profMu.Unlock()
	if p, ok := profCache[name]; ok {
		return p, nil
	}
	p, err := loadProfile(name)
	if err == nil {
		profCache[name] = p
	}
	return p, err
}

var (
	profMu    sync.Mutex
	profCache = map[string]*profile.ISF{}
)

func loadProfile(name string) (*profile.ISF, error) {
	switch name {
	case "win7":
		return profile.ParseISF([]byte(win7Fragment))
	case "win10-subset":
		return profile.ParseISF([]byte(win10Subset))
	}
	dir, err := ProfileDir()
	if err != nil {
		return nil, err
	}
	for _, p := range Profiles {
		if p.Name == name {
			return profile.OpenISF(filepath.Join(dir, p.File))
		}
	}
	return nil, fmt.Errorf("wintest: unknown profile %q", name)
}

// ProfileNames are the layouts every test runs with.
var ProfileNames = []string{"win10-22H2", "win11-21H2", "win7"}

// New builds a guest from a profile: kernel image, System process, object
// directories and a volume, one KPCR per vCPU running the System thread.
func New(isf *profile.ISF, opt Options) (*Guest, error) {
	if opt.VCPUs <= 0 {
		opt.VCPUs = 1
	}
	if opt.Frames <= 0 {
		opt.Frames = 8192
	}
	w := isf.Metadata.Windows
	if w == nil {
		return nil, errors.New("wintest: profile is not a Windows profile")
	}
	g := &Guest{
		M:       sim.New(sim.Config{Frames: opt.Frames, VCPUs: opt.VCPUs, Seed: opt.Seed, Latency: opt.Latency}),
		Prof:    isf.Profile,
		Base:    KernelBase,
		types:   map[uint8]introspect.Va{},
		pool:    poolBase,
		poolEnd: poolBase,
	}
	_, g.cookie = g.Prof.Symbols["ObHeaderCookie"]
	if err := g.parseGUID(w); err != nil {
		return nil, err
	}
	var err error
	if g.Kernel, err = g.M.NewAddressSpace(paging.Level4); err != nil {
		return nil, err
	}
	if err := g.buildImage(); err != nil {
		return nil, fmt.Errorf("wintest: kernel image: %w", err)
	}
	if err := g.buildTypes(); err != nil {
		return nil, fmt.Errorf("wintest: object types: %w", err)
	}
	if err := g.buildNamespace(); err != nil {
		return nil, fmt.Errorf("wintest: namespace: %w", err)
	}
	// The process list head points at itself.
	head := g.sym("PsActiveProcessHead")
	g.put64(head, uint64(head))
	g.put64(head+8, uint64(head))
	g.System, err = g.newProcess("System", 4, 0, 0, g.Kernel)
	if err != nil {
		return nil, err
	}
	g.put64(g.sym("PsInitialSystemProcess"), uint64(g.System.EPROCESS))
	for v := 0; v < opt.VCPUs; v++ {
		if err := g.buildKPCR(introspect.VCPU(v)); err != nil {
			return nil, err
		}
	}
	return g, nil
}

func (g *Guest) parseGUID(w *profile.PDBInfo) error {
	var raw [16]byte
	if len(w.GUID) != 32 {
		return fmt.Errorf("wintest: GUID %q", w.GUID)
	}
	for i := 0; i < 16; i++ {
		if _, err := fmt.Sscanf(w.GUID[2*i:2*i+2], "%02X", &raw[i]); err != nil {
			return fmt.Errorf("wintest: GUID %q: %w", w.GUID, err)
		}
	}
	// The string is Data1-3 big-endian; the record stores them little-endian.
	cv := profile.CodeView{PDB: w.Database, Age: w.Age}
	cv.GUID = [16]byte{raw[3], raw[2], raw[1], raw[0], raw[5], raw[4], raw[7], raw[6]}
	copy(cv.GUID[8:], raw[8:])
	g.CodeView = cv
	return nil
}

// Off returns a field offset from the profile; it panics on a missing field
// since the builder is test code driven by a known profile.
func (g *Guest) Off(s, f string) introspect.Va {
	v, err := g.Prof.Offset(s, f)
	if err != nil {
		panic(err)
	}
	return introspect.Va(v)
}

func (g *Guest) size(s string) int {
	v, err := g.Prof.Size(s)
	if err != nil {
		panic(err)
	}
	return int(v)
}

func (g *Guest) hasField(s, f string) bool {
	_, err := g.Prof.Field(s, f)
	return err == nil
}

func (g *Guest) sym(name string) introspect.Va {
	v, err := g.Prof.Symbol(name)
	if err != nil {
		panic(err)
	}
	return g.Base + introspect.Va(v)
}

// Symbol returns the run-time address of a kernel symbol.
func (g *Guest) Symbol(name string) introspect.Va { return g.sym(name) }

func (g *Guest) write(va introspect.Va, b []byte) {
	if err := g.Kernel.Write(va, b); err != nil {
		panic(fmt.Sprintf("wintest: write %v: %v", va, err))
	}
}

func (g *Guest) put64(va introspect.Va, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	g.write(va, b[:])
}

func (g *Guest) put32(va introspect.Va, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	g.write(va, b[:])
}

func (g *Guest) put16(va introspect.Va, v uint16) {
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], v)
	g.write(va, b[:])
}

func (g *Guest) put8(va introspect.Va, v uint8) { g.write(va, []byte{v}) }

const kflags = paging.PTEWrite | paging.PTEAccessed | paging.PTEDirty

// mapKernel maps the pages covering [va, va+n) if not yet mapped.
func (g *Guest) mapKernel(va introspect.Va, n int) error {
	for p := va.PageBase(); p < va+introspect.Va(n); p += introspect.PageSize {
		if _, err := g.Kernel.Translate(p); err == nil {
			continue
		}
		if _, err := g.Kernel.MapNew(p, 1, kflags); err != nil {
			return err
		}
	}
	return nil
}

// buildImage maps the pages of the kernel image the guest uses: headers,
// the syscall entry, the hooked functions and the data symbols. The rest of
// the image stays unmapped (as discarded or paged-out sections would), which
// FindKernel must skip.
func (g *Guest) buildImage() error {
	if err := g.mapKernel(g.Base, introspect.PageSize); err != nil {
		return err
	}
	hdr := make([]byte, introspect.PageSize)
	copy(hdr, "MZ")
	const lfanew = 0x100
	binary.LittleEndian.PutUint32(hdr[0x3c:], lfanew)
	copy(hdr[lfanew:], "PE\x00\x00")
	coff := hdr[lfanew+4:]
	binary.LittleEndian.PutUint16(coff[0:], 0x8664) // machine AMD64
	binary.LittleEndian.PutUint16(coff[16:], 240)   // SizeOfOptionalHeader
	opt := hdr[lfanew+24:]
	binary.LittleEndian.PutUint16(opt[0:], 0x20b)
	binary.LittleEndian.PutUint64(opt[24:], uint64(g.Base)) // ImageBase
	binary.LittleEndian.PutUint32(opt[108:], 16)            // NumberOfRvaAndSizes
	const debugRVA, cvRVA = 0x400, 0x440
	binary.LittleEndian.PutUint32(opt[112+6*8:], debugRVA)
	binary.LittleEndian.PutUint32(opt[112+6*8+4:], 28)
	rec := append([]byte("RSDS"), g.CodeView.GUID[:]...)
	rec = binary.LittleEndian.AppendUint32(rec, g.CodeView.Age)
	rec = append(append(rec, g.CodeView.PDB...), 0)
	dbg := hdr[debugRVA:]
	binary.LittleEndian.PutUint32(dbg[12:], 2) // IMAGE_DEBUG_TYPE_CODEVIEW
	binary.LittleEndian.PutUint32(dbg[16:], uint32(len(rec)))
	binary.LittleEndian.PutUint32(dbg[20:], cvRVA)
	copy(hdr[cvRVA:], rec)
	g.write(g.Base, hdr)

	for _, f := range []string{"NtCreateFile", "NtWriteFile", "NtSetInformationFile", "PspInsertProcess", "MmCleanProcessAddressSpace", "KiSystemCall64", "KiSystemCall64Shadow"} {
		if _, ok := g.Prof.Symbols[f]; !ok {
			continue
		}
		va := g.sym(f)
		if err := g.mapKernel(va, len(codeBytes)); err != nil {
			return err
		}
		g.write(va, []byte(codeBytes))
	}
	for _, d := range []struct {
		name string
		n    int
	}{{"PsInitialSystemProcess", 8}, {"ObTypeIndexTable", 256 * 8}, {"ObHeaderCookie", 1}, {"PsActiveProcessHead", 16}} {
		if _, ok := g.Prof.Symbols[d.name]; !ok {
			continue
		}
		if err := g.mapKernel(g.sym(d.name), d.n); err != nil {
			return err
		}
	}
	if g.cookie {
		g.put8(g.sym("ObHeaderCookie"), HeaderCookie)
	}
	g.put64(g.sym("ObTypeIndexTable")+8, 0xbad0b0b0) // slot 1, as Windows fills it
	return nil
}

// Alloc returns n zeroed bytes of kernel pool, 16-byte aligned; align
// 4096 gives a page-aligned block.
func (g *Guest) Alloc(n, align int) (introspect.Va, error) {
	if align < 16 {
		align = 16
	}
	va := (g.pool + introspect.Va(align-1)) &^ introspect.Va(align-1)
	end := va + introspect.Va(n)
	for g.poolEnd < end {
		if _, err := g.Kernel.MapNew(g.poolEnd, 1, kflags); err != nil {
			return 0, err
		}
		g.poolEnd += introspect.PageSize
	}
	g.pool = end
	return va, nil
}

// NewObject allocates an object: optional creator info, name info when
// name is set, OBJECT_HEADER and a body of bodySize bytes, and returns the
// body. The header's TypeIndex is cookie-encoded when the build uses it.
func (g *Guest) NewObject(typ string, bodySize int, name string, dir introspect.Va, creator bool) (introspect.Va, error) {
	idx, ok := TypeIndexes[typ]
	if !ok {
		return 0, fmt.Errorf("wintest: type %q", typ)
	}
	pre := 0
	var mask uint8
	if name != "" {
		pre += g.size("_OBJECT_HEADER_NAME_INFO")
		mask |= 2
	}
	if creator {
		pre += g.size("_OBJECT_HEADER_CREATOR_INFO")
		mask |= 1
	}
	body := int(g.Off("_OBJECT_HEADER", "Body"))
	start, err := g.Alloc(pre+body+bodySize, 16)
	if err != nil {
		return 0, err
	}
	hdr := start + introspect.Va(pre)
	g.put64(hdr+g.Off("_OBJECT_HEADER", "PointerCount"), 1)
	g.put8(hdr+g.Off("_OBJECT_HEADER", "InfoMask"), mask)
	ti := idx
	if g.cookie {
		ti ^= byte(hdr>>8) ^ HeaderCookie
	}
	g.put8(hdr+g.Off("_OBJECT_HEADER", "TypeIndex"), ti)
	if name != "" {
		// Optional headers sit below OBJECT_HEADER in InfoMask bit order:
		// creator info (bit 0) nearest, then name info (bit 1).
		ni := hdr - introspect.Va(g.size("_OBJECT_HEADER_NAME_INFO"))
		if creator {
			ni -= introspect.Va(g.size("_OBJECT_HEADER_CREATOR_INFO"))
		}
		if err := g.kernelUnicode(ni+g.Off("_OBJECT_HEADER_NAME_INFO", "Name"), name); err != nil {
			return 0, err
		}
		g.put64(ni+g.Off("_OBJECT_HEADER_NAME_INFO", "Directory"), uint64(dir))
	}
	return hdr + introspect.Va(body), nil
}

// kernelUnicode writes a UNICODE_STRING at at with its buffer in pool.
func (g *Guest) kernelUnicode(at introspect.Va, s string) error {
	b := utf16le(s)
	buf, err := g.Alloc(len(b)+2, 16)
	if err != nil {
		return err
	}
	g.write(buf, b)
	g.writeUnicodeHeader(g.Kernel, at, len(b), buf)
	return nil
}

func (g *Guest) writeUnicodeHeader(as *sim.AddressSpace, at introspect.Va, n int, buf introspect.Va) {
	var h [16]byte
	lo, mo, bo := g.Off("_UNICODE_STRING", "Length"), g.Off("_UNICODE_STRING", "MaximumLength"), g.Off("_UNICODE_STRING", "Buffer")
	binary.LittleEndian.PutUint16(h[lo:], uint16(n))
	binary.LittleEndian.PutUint16(h[mo:], uint16(n+2))
	binary.LittleEndian.PutUint64(h[bo:], uint64(buf))
	if err := as.Write(at, h[:g.size("_UNICODE_STRING")]); err != nil {
		panic(err)
	}
}

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func (g *Guest) buildTypes() error {
	if err := g.mapKernel(g.sym("ObTypeIndexTable"), 256*8); err != nil {
		return err
	}
	for name, idx := range TypeIndexes {
		t, err := g.NewObject("Type", g.size("_OBJECT_TYPE"), name, 0, false)
		if err != nil {
			return err
		}
		if err := g.kernelUnicode(t+g.Off("_OBJECT_TYPE", "Name"), name); err != nil {
			return err
		}
		g.put8(t+g.Off("_OBJECT_TYPE", "Index"), idx)
		g.put64(g.sym("ObTypeIndexTable")+introspect.Va(8*int(idx)), uint64(t))
		g.types[idx] = t
	}
	return nil
}

func (g *Guest) buildNamespace() error {
	var err error
	if g.RootDir, err = g.NewObject("Directory", 0x150, `\`, 0, true); err != nil {
		return err
	}
	if g.DeviceDir, err = g.NewObject("Directory", 0x150, "Device", g.RootDir, true); err != nil {
		return err
	}
	if g.Volume, err = g.NewObject("Device", g.size("_DEVICE_OBJECT"), "HarddiskVolume3", g.DeviceDir, false); err != nil {
		return err
	}
	g.put16(g.Volume+g.Off("_DEVICE_OBJECT", "Type"), 3) // IO_TYPE_DEVICE
	g.VolumePath = `\Device\HarddiskVolume3`
	return nil
}

func (g *Guest) buildKPCR(v introspect.VCPU) error {
	kpcr, err := g.Alloc(g.size("_KPCR"), introspect.PageSize)
	if err != nil {
		return err
	}
	g.KPCR = append(g.KPCR, kpcr)
	if g.hasField("_KPCR", "Self") {
		g.put64(kpcr+g.Off("_KPCR", "Self"), uint64(kpcr))
	}
	if g.hasField("_KPCR", "CurrentPrcb") {
		g.put64(kpcr+g.Off("_KPCR", "CurrentPrcb"), uint64(kpcr+g.Off("_KPCR", "Prcb")))
	}
	g.put64(g.currentThreadSlot(v), uint64(g.System.Thread))
	regs, err := g.M.Registers(v)
	if err != nil {
		return err
	}
	regs.CR3 = uint64(g.Kernel.Root)
	regs.CS.Selector, regs.SS.Selector = 0x10, 0x18
	regs.GSBase, regs.KernelGSBase = uint64(kpcr), uint64(TEB)
	regs.RSP = uint64(g.System.Stack)
	entry := "KiSystemCall64"
	if _, ok := g.Prof.Symbols["KiSystemCall64Shadow"]; ok {
		entry = "KiSystemCall64Shadow" // KVA shadowing, as on patched 10/11
	}
	regs.LSTAR = uint64(g.sym(entry))
	return g.M.SetRegisters(v, &regs)
}

func (g *Guest) currentThreadSlot(v introspect.VCPU) introspect.Va {
	return g.KPCR[v] + g.Off("_KPCR", "Prcb") + g.Off("_KPRCB", "CurrentThread")
}

// NewProcess creates a process with its own address space (sharing the
// kernel half), a thread, and a handle table of the given level (0-2),
// and links it at the tail of the process list.
func (g *Guest) NewProcess(name string, pid uint64, parent *Process, level int) (*Process, error) {
	as, err := g.Kernel.Clone()
	if err != nil {
		return nil, err
	}
	ppid := uint64(0)
	if parent != nil {
		ppid = parent.PID
	}
	return g.newProcess(name, pid, ppid, level, as)
}

func (g *Guest) newProcess(name string, pid, ppid uint64, level int, as *sim.AddressSpace) (*Process, error) {
	if level < 0 || level > 2 {
		return nil, fmt.Errorf("wintest: handle table level %d", level)
	}
	p := &Process{AS: as, PID: pid, PPID: ppid, Name: name, Level: level,
		user: userBase + introspect.Va(pid)<<24}
	var err error
	if p.EPROCESS, err = g.NewObject("Process", g.size("_EPROCESS"), "", 0, false); err != nil {
		return nil, err
	}
	if p.Thread, err = g.NewObject("Thread", g.size("_KTHREAD"), "", 0, false); err != nil {
		return nil, err
	}
	stack, err := g.Alloc(2*introspect.PageSize, introspect.PageSize)
	if err != nil {
		return nil, err
	}
	p.Stack = stack + introspect.PageSize + 0x800
	ep := p.EPROCESS
	g.put64(ep+g.Off("_KPROCESS", "DirectoryTableBase"), uint64(as.Root))
	if g.hasField("_KPROCESS", "UserDirectoryTableBase") && pid != 4 {
		u, err := as.Clone() // the KVA-shadow user root
		if err != nil {
			return nil, err
		}
		p.UserRoot = u.Root
		g.put64(ep+g.Off("_KPROCESS", "UserDirectoryTableBase"), uint64(u.Root))
	}
	g.put64(ep+g.Off("_EPROCESS", "UniqueProcessId"), pid)
	g.put64(ep+g.Off("_EPROCESS", "InheritedFromUniqueProcessId"), ppid)
	fn := make([]byte, 15)
	copy(fn, name)
	g.write(ep+g.Off("_EPROCESS", "ImageFileName"), fn)
	if pid != 4 {
		p.ImageBase = 0x7ff6_0000_0000 + introspect.Va(pid)<<20
		p.PEB = 0x0000_00e5_0000_0000 + introspect.Va(pid)<<12
	}
	g.put64(ep+g.Off("_EPROCESS", "SectionBaseAddress"), uint64(p.ImageBase))
	g.put64(ep+g.Off("_EPROCESS", "Peb"), uint64(p.PEB))
	// Thread: its process and its attached (APC state) process.
	g.put64(p.Thread+g.Off("_KTHREAD", "Process"), uint64(ep))
	g.put64(p.Thread+g.Off("_KTHREAD", "ApcState")+g.Off("_KAPC_STATE", "Process"), uint64(ep))
	// Handle table.
	if p.HandleTable, err = g.Alloc(g.size("_HANDLE_TABLE"), 16); err != nil {
		return nil, err
	}
	if p.tableTop, err = g.Alloc(introspect.PageSize, introspect.PageSize); err != nil {
		return nil, err
	}
	g.put64(p.HandleTable+g.Off("_HANDLE_TABLE", "TableCode"), uint64(p.tableTop)|uint64(level))
	g.put64(ep+g.Off("_EPROCESS", "ObjectTable"), uint64(p.HandleTable))
	// Link at the tail of PsActiveProcessHead.
	head := g.sym("PsActiveProcessHead")
	links := ep + g.Off("_EPROCESS", "ActiveProcessLinks")
	var b [8]byte
	if err := g.Kernel.Read(head+8, b[:]); err != nil {
		return nil, err
	}
	tail := introspect.Va(binary.LittleEndian.Uint64(b[:]))
	g.put64(links, uint64(head))
	g.put64(links+8, uint64(tail))
	g.put64(tail, uint64(links))
	g.put64(head+8, uint64(links))
	return p, nil
}

// Unlink removes a process from the process list (as process exit does).
func (g *Guest) Unlink(p *Process) {
	links := p.EPROCESS + g.Off("_EPROCESS", "ActiveProcessLinks")
	var b [16]byte
	if err := g.Kernel.Read(links, b[:]); err != nil {
		panic(err)
	}
	fl, bl := binary.LittleEndian.Uint64(b[:]), binary.LittleEndian.Uint64(b[8:])
	g.put64(introspect.Va(bl), fl)
	g.put64(introspect.Va(fl)+8, bl)
}

// SetHandle makes handle (a multiple of 4; kernel handles have bit 31 set
// and go to the System process) refer to the object body in p's table,
// allocating table pages as the level needs.
func (g *Guest) SetHandle(p *Process, handle uint64, body introspect.Va) error {
	if handle&0x80000000 != 0 {
		p = g.System
		handle &= 0x7fffffff
	}
	idx := handle >> 2
	entrySize := uint64(g.size("_HANDLE_TABLE_ENTRY"))
	page := p.tableTop
	path := []uint64{idx / 256 / 512, idx / 256 % 512}[2-p.Level:]
	if idx/256/512 >= 512 || p.Level < 2 && idx/256/512 != 0 || p.Level < 1 && idx/256 != 0 {
		return fmt.Errorf("wintest: handle %#x does not fit a level-%d table", handle, p.Level)
	}
	for _, i := range path {
		var b [8]byte
		if err := g.Kernel.Read(page+introspect.Va(8*i), b[:]); err != nil {
			return err
		}
		next := introspect.Va(binary.LittleEndian.Uint64(b[:]))
		if next == 0 {
			var err error
			if next, err = g.Alloc(introspect.PageSize, introspect.PageSize); err != nil {
				return err
			}
			g.put64(page+introspect.Va(8*i), uint64(next))
		}
		page = next
	}
	entry := page + introspect.Va(idx%256*entrySize)
	hdr := uint64(body - g.Off("_OBJECT_HEADER", "Body"))
	if f, err := g.Prof.Field("_HANDLE_TABLE_ENTRY", "ObjectPointerBits"); err == nil {
		bits := (hdr & (1<<48 - 1)) >> 4
		g.put64(entry, bits<<f.Type.BitPos|1) // Unlocked
		g.put32(entry+8, 0x0012019f)          // GrantedAccessBits
	} else {
		g.put64(entry, hdr|2) // OBJ_INHERIT in the flag bits
		g.put32(entry+8, 0x0012019f)
	}
	return nil
}

// NewFile creates a FILE_OBJECT on the volume with the given file name
// (e.g. `\Users\a\x.txt`) and returns its body.
func (g *Guest) NewFile(name string) (introspect.Va, error) {
	f, err := g.NewObject("File", g.size("_FILE_OBJECT"), "", 0, false)
	if err != nil {
		return 0, err
	}
	g.put16(f+g.Off("_FILE_OBJECT", "Type"), 5) // IO_TYPE_FILE
	g.put64(f+g.Off("_FILE_OBJECT", "DeviceObject"), uint64(g.Volume))
	if err := g.kernelUnicode(f+g.Off("_FILE_OBJECT", "FileName"), name); err != nil {
		return 0, err
	}
	return f, nil
}

// UserAlloc maps fresh pages of p's user memory and returns their start.
func (g *Guest) UserAlloc(p *Process, pages int) (introspect.Va, error) {
	va := p.user
	if _, err := p.AS.MapNew(va, pages, paging.PTEWrite|paging.PTEUser|paging.PTEAccessed|paging.PTEDirty); err != nil {
		return 0, err
	}
	p.user += introspect.Va(pages * introspect.PageSize)
	return va, nil
}

// ObjectAttributes writes an OBJECT_ATTRIBUTES naming name (relative to the
// rootDir handle when not zero) in p's user memory: the structure on one
// page, the UNICODE_STRING and its buffer on the next, so either page can be
// paged out on its own. It returns the structure's address and the page of
// the string.
func (g *Guest) ObjectAttributes(p *Process, rootDir uint64, name string) (oa, str introspect.Va, err error) {
	va, err := g.UserAlloc(p, 2)
	if err != nil {
		return 0, 0, err
	}
	oa = va + 0x40
	str = va + introspect.PageSize + 0x20
	buf := str + 0x40
	b := make([]byte, g.size("_OBJECT_ATTRIBUTES"))
	binary.LittleEndian.PutUint32(b[g.Off("_OBJECT_ATTRIBUTES", "Length"):], uint32(len(b)))
	binary.LittleEndian.PutUint64(b[g.Off("_OBJECT_ATTRIBUTES", "RootDirectory"):], rootDir)
	binary.LittleEndian.PutUint64(b[g.Off("_OBJECT_ATTRIBUTES", "ObjectName"):], uint64(str))
	binary.LittleEndian.PutUint32(b[g.Off("_OBJECT_ATTRIBUTES", "Attributes"):], 0x40) // OBJ_CASE_INSENSITIVE
	if err := p.AS.Write(oa, b); err != nil {
		return 0, 0, err
	}
	u := utf16le(name)
	if err := p.AS.Write(buf, u); err != nil {
		return 0, 0, err
	}
	g.writeUnicodeHeader(p.AS, str, len(u), buf)
	return oa, str, nil
}

// SwitchTo returns the guest ops that make vCPU v run p's thread: the
// scheduler's store of KPRCB.CurrentThread and the CR3 switch.
func (g *Guest) SwitchTo(v introspect.VCPU, p *Process) []sim.Op {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(p.Thread))
	return []sim.Op{sim.Write(g.currentThreadSlot(v), b[:]), sim.SetCR3(p.AS.Root)}
}

// Call returns the op that calls kernel function fn with integer
// arguments per the Microsoft x64 convention (first four in registers, the
// rest stored on p's kernel stack above the home space, written now).
func (g *Guest) Call(p *Process, fn string, args ...uint64) (sim.Op, error) {
	rsp := p.Stack
	for i := 4; i < len(args); i++ {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], args[i])
		if err := g.Kernel.Write(rsp+introspect.Va(8*(i+1)), b[:]); err != nil {
			return sim.Op{}, err
		}
	}
	a := make([]uint64, 4)
	copy(a, args)
	return sim.Call(g.sym(fn), func(r *amd64.Registers) {
		r.RCX, r.RDX, r.R8, r.R9 = a[0], a[1], a[2], a[3]
		r.RSP = uint64(rsp)
		r.CS.Selector = 0x10
	}), nil
}

// Regs returns vCPU v's registers as they are at a call of fn by p,
// without running the model (for tests of the OS layer).
func (g *Guest) Regs(v introspect.VCPU, p *Process, fn string, args ...uint64) (amd64.Registers, error) {
	op, err := g.Call(p, fn, args...)
	if err != nil {
		return amd64.Registers{}, err
	}
	r, err := g.M.Registers(v)
	if err != nil {
		return r, err
	}
	g.put64(g.currentThreadSlot(v), uint64(p.Thread))
	r.CR3 = uint64(p.AS.Root)
	r.RIP = uint64(op.VA)
	op.Regs(&r)
	return r, nil
}

// PageOut clears the present bit of the PTE mapping va in as (directly, as
// a guest that already paged it out).
func (g *Guest) PageOut(as *sim.AddressSpace, va introspect.Va) error {
	epa, e, err := as.Entry(va, 1)
	if err != nil {
		return err
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], e&^paging.PTEPresent)
	return g.M.Poke(epa, b[:])
}

// PageIn sets the present bit again.
func (g *Guest) PageIn(as *sim.AddressSpace, va introspect.Va) error {
	epa, e, err := as.Entry(va, 1)
	if err != nil {
		return err
	}
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], e|paging.PTEPresent)
	return g.M.Poke(epa, b[:])
}
