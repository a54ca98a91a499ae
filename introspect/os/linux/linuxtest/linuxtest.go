// Package linuxtest builds synthetic Linux guests in a byte slice for tests
// and benchmarks of the Linux OS layer and probes: 4-level page tables
// (a slid kernel image on a 2 MiB page, the direct map on 2 MiB pages,
// user pages on 4 KiB pages, optional PTI user PGDs), per-cpu areas, and
// kernel objects (tasks, files, dentries, mounts, fd tables) laid out with
// the offsets of a hand-made profile whose names match the kernel's BTF.
package linuxtest

import (
	"encoding/binary"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// Layout constants of the synthetic guest.
const (
	RAMSize     = 16 << 20
	DirectMap   = 0xffff_8880_0000_0000
	LinkBase    = 0xffff_ffff_8100_0000 // _text at link time
	ImagePhys   = 0x20_0000             // physical load address of _text
	Banner      = "Linux version 6.1.0-99-cloud-amd64 (synthetic) #1 SMP PREEMPT_DYNAMIC Debian 6.1.999-1"
	PerCPUCur   = 0x1fdc0 // per-cpu offset of current_task
	bannerOff   = 0x10_0000
	initPgtOff  = 0x10_2000
	initTaskOff = 0x11_0000
	heapStart   = 0x40_0000
	UserBase    = 0x40_0000 // first user page VA
	perCPUPages = 0x20
)

// Symbols holds the link addresses of the synthetic kernel's symbols.
var Symbols = map[string]uint64{
	"_text":                LinkBase,
	"_etext":               LinkBase + 0x1f_0000,
	"linux_banner":         LinkBase + bannerOff,
	"init_top_pgt":         LinkBase + initPgtOff,
	"entry_SYSCALL_64":     LinkBase + 0x100,
	"current_task":         PerCPUCur,
	"init_task":            LinkBase + initTaskOff,
	"do_sys_openat2":       LinkBase + 0x1000,
	"vfs_open":             LinkBase + 0x1400,
	"security_path_rename": LinkBase + 0x5000,
	"security_path_unlink": LinkBase + 0x5400,
	"do_splice":            LinkBase + 0x5800,
	"do_sendfile":          LinkBase + 0x5c00,
	"proc_exec_connector":  LinkBase + 0x6000,
	"vfs_write":            LinkBase + 0x2000,
	"wake_up_new_task":     LinkBase + 0x3000,
	"do_exit":              LinkBase + 0x4000,
	"taskstats_exit":       LinkBase + 0x4800,
}

func st(name string, size uint64, fields ...profile.Field) *profile.Struct {
	s := &profile.Struct{Name: name, Size: size, Fields: map[string]profile.Field{}}
	for _, f := range fields {
		s.Fields[f.Name] = f
	}
	return s
}

func fi(name string, off uint64, t profile.Type) profile.Field {
	return profile.Field{Name: name, Offset: off, Type: t}
}

var (
	tInt  = profile.Type{Kind: profile.KindBase, Name: "int", Size: 4}
	tU32  = profile.Type{Kind: profile.KindBase, Name: "unsigned int", Size: 4}
	tU16  = profile.Type{Kind: profile.KindBase, Name: "short unsigned int", Size: 2}
	tU64  = profile.Type{Kind: profile.KindBase, Name: "long long unsigned int", Size: 8}
	tPtr  = profile.Type{Kind: profile.KindPointer, Size: 8}
	tComm = profile.Type{Kind: profile.KindArray, Size: 16, Count: 16, Elem: &profile.Type{Kind: profile.KindBase, Name: "char", Size: 1}}
)

func tStruct(n string, size uint64) profile.Type {
	return profile.Type{Kind: profile.KindStruct, Name: n, Size: size}
}

// Offsets of the synthetic layout, exported for tests that forge fields.
const (
	TaskPID, TaskTGID, TaskRealParent, TaskGroupLeader = 0x5a0, 0x5a4, 0x5b0, 0x5d0
	TaskMM, TaskComm, TaskFS, TaskFiles, TaskSignal    = 0x4f0, 0x750, 0x7a0, 0x7a8, 0x7b8
	TaskTasks                                          = 0x8c0
	TaskSize                                           = 0x2000
	MMExeFile, MMPgd                                   = 0x3a0, 0x48
	MMArgStart, MMArgEnd                               = 0x138, 0x140
	TaskExitCode                                       = 0x908
	FilePath, FileInode                                = 0x10, 0x20
	FileFlags, FileMode                                = 0x40, 0x44
	DentryParent, DentryName, DentryInode              = 0x18, 0x20, 0x30
	QstrLen, QstrName                                  = 0x4, 0x8
	FilesFdt, FdtMaxFDs, FdtFD                         = 0x20, 0x0, 0x8
	MountParent, MountMountpoint, MountMnt             = 0x10, 0x18, 0x20
	VfsmountRoot                                       = 0x0
	FSRoot, FSPwd                                      = 0x18, 0x28
	SignalLive                                         = 0x4
)

// Profile returns the hand-made profile of the synthetic kernel, with the
// anonymous members of qstr flattened as BTF-derived profiles do.
func Profile() *profile.Profile {
	p := profile.New(Banner + "\n")
	for k, v := range Symbols {
		p.Symbols[k] = v
	}
	p.Types["task_struct"] = st("task_struct", TaskSize,
		fi("pid", TaskPID, tInt), fi("tgid", TaskTGID, tInt),
		fi("real_parent", TaskRealParent, tPtr), fi("group_leader", TaskGroupLeader, tPtr),
		fi("mm", TaskMM, tPtr), fi("comm", TaskComm, tComm), fi("fs", TaskFS, tPtr),
		fi("files", TaskFiles, tPtr), fi("signal", TaskSignal, tPtr),
		fi("tasks", TaskTasks, tStruct("list_head", 16)), fi("exit_code", TaskExitCode, tInt))
	p.Types["mm_struct"] = st("mm_struct", 0x400, fi("exe_file", MMExeFile, tPtr), fi("pgd", MMPgd, tPtr),
		fi("arg_start", MMArgStart, tU64), fi("arg_end", MMArgEnd, tU64))
	p.Types["file"] = st("file", 0x100, fi("f_path", FilePath, tStruct("path", 16)), fi("f_inode", FileInode, tPtr),
		fi("f_flags", FileFlags, tU32), fi("f_mode", FileMode, tU32))
	p.Types["path"] = st("path", 16, fi("mnt", 0, tPtr), fi("dentry", 8, tPtr))
	p.Types["dentry"] = st("dentry", 0xc0, fi("d_parent", DentryParent, tPtr),
		fi("d_name", DentryName, tStruct("qstr", 16)), fi("d_inode", DentryInode, tPtr))
	p.Types["qstr"] = st("qstr", 16, fi("hash", 0, tU32), fi("len", QstrLen, tU32),
		fi("hash_len", 0, tU64), fi("name", QstrName, tPtr))
	p.Types["inode"] = st("inode", 0x200, fi("i_mode", 0, tU16))
	p.Types["files_struct"] = st("files_struct", 0x100, fi("fdt", FilesFdt, tPtr))
	p.Types["fdtable"] = st("fdtable", 0x38, fi("max_fds", FdtMaxFDs, tU32), fi("fd", FdtFD, tPtr))
	p.Types["mount"] = st("mount", 0x140, fi("mnt_parent", MountParent, tPtr),
		fi("mnt_mountpoint", MountMountpoint, tPtr), fi("mnt", MountMnt, tStruct("vfsmount", 0x20)))
	p.Types["vfsmount"] = st("vfsmount", 0x20, fi("mnt_root", VfsmountRoot, tPtr))
	p.Types["fs_struct"] = st("fs_struct", 0x38, fi("root", FSRoot, tStruct("path", 16)), fi("pwd", FSPwd, tStruct("path", 16)))
	p.Types["signal_struct"] = st("signal_struct", 0x400, fi("live", SignalLive, tStruct("atomic_t", 4)))
	p.Types["open_how"] = st("open_how", 24, fi("flags", 0, tU64), fi("mode", 8, tU64), fi("resolve", 16, tU64))
	return p
}

// Guest is a synthetic guest: RAM, page tables and vCPUs. It implements
// driver.PhysReader and driver.RegisterReader.
type Guest struct {
	RAM   []byte
	Slide uint64
	// KernelRoot is the physical address of init_top_pgt.
	KernelRoot introspect.Pa
	Regs       []amd64.Registers
	next       uint64 // bump allocator (physical)
}

var _ driver.PhysReader = (*Guest)(nil)
var _ driver.RegisterReader = (*Guest)(nil)

// New builds a guest with the kernel slid by slide (a multiple of 2 MiB) and
// n vCPUs, each in kernel mode on init_top_pgt with its own per-cpu area.
func New(slide uint64, n int) *Guest {
	g := &Guest{RAM: make([]byte, RAMSize), Slide: slide, next: heapStart}
	g.KernelRoot = introspect.Pa(ImagePhys + initPgtOff)
	copy(g.RAM[ImagePhys+bannerOff:], Banner+"\n\x00")
	// Kernel image: one 2 MiB page.
	g.mapLarge(g.KernelRoot, LinkBase+slide, ImagePhys)
	// Direct map of all RAM on 2 MiB pages.
	for pa := uint64(0); pa < RAMSize; pa += 2 << 20 {
		g.mapLarge(g.KernelRoot, DirectMap+pa, pa)
	}
	for i := 0; i < n; i++ {
		pcpu := g.Alloc(perCPUPages * introspect.PageSize)
		g.Regs = append(g.Regs, amd64.Registers{
			CS:     amd64.Segment{Selector: 0x10},
			CR0:    amd64.CR0PG | amd64.CR0WP | 1,
			CR4:    amd64.CR4PAE,
			CR3:    uint64(g.KernelRoot),
			EFER:   amd64.EFERLME | amd64.EFERLMA,
			LSTAR:  LinkBase + 0x100 + slide,
			RIP:    LinkBase + 0x5000 + slide,
			RSP:    uint64(g.Alloc(introspect.PageSize)) + introspect.PageSize - 64,
			GSBase: uint64(pcpu),
		})
	}
	return g
}

// ReadPhysical implements driver.PhysReader.
func (g *Guest) ReadPhysical(pa introspect.Pa, p []byte) error {
	if uint64(pa) >= uint64(len(g.RAM)) || uint64(len(g.RAM))-uint64(pa) < uint64(len(p)) {
		return fmt.Errorf("read %d bytes at %v: %w", len(p), pa, driver.ErrOutOfRange)
	}
	copy(p, g.RAM[pa:])
	return nil
}

// VCPUs implements driver.RegisterReader.
func (g *Guest) VCPUs() int { return len(g.Regs) }

// Registers implements driver.RegisterReader.
func (g *Guest) Registers(v introspect.VCPU) (amd64.Registers, error) {
	if int(v) >= len(g.Regs) {
		return amd64.Registers{}, fmt.Errorf("vcpu %d: %w", v, driver.ErrOutOfRange)
	}
	return g.Regs[v], nil
}

// AllocPhys returns zeroed physical memory of size bytes, 64-byte aligned
// (page aligned for sizes of a page or more).
func (g *Guest) AllocPhys(size uint64) introspect.Pa {
	align := uint64(64)
	if size >= introspect.PageSize {
		align = introspect.PageSize
	}
	g.next = (g.next + align - 1) &^ (align - 1)
	pa := g.next
	g.next += size
	if g.next > RAMSize {
		panic("linuxtest: guest RAM exhausted")
	}
	return introspect.Pa(pa)
}

// Alloc returns the direct-map address of a new zeroed kernel object.
func (g *Guest) Alloc(size uint64) introspect.Va {
	return KVA(g.AllocPhys(size))
}

// KVA returns the direct-map address of pa.
func KVA(pa introspect.Pa) introspect.Va { return introspect.Va(DirectMap + uint64(pa)) }

// KPA returns the physical address of a direct-map address.
func KPA(va introspect.Va) introspect.Pa { return introspect.Pa(uint64(va) - DirectMap) }

func (g *Guest) entry(table introspect.Pa, idx uint64) []byte {
	o := uint64(table) + 8*idx
	return g.RAM[o : o+8]
}

// table returns the next-level table under entry idx of table, creating it.
func (g *Guest) table(table introspect.Pa, idx uint64) introspect.Pa {
	e := binary.LittleEndian.Uint64(g.entry(table, idx))
	if e&1 != 0 {
		return introspect.Pa(e & 0x000f_ffff_ffff_f000)
	}
	t := g.AllocPhys(introspect.PageSize)
	binary.LittleEndian.PutUint64(g.entry(table, idx), uint64(t)|0x67)
	return t
}

func idx(va uint64, level uint) uint64 { return (va >> (12 + 9*(level-1))) & 0x1ff }

func (g *Guest) mapLarge(root introspect.Pa, va, pa uint64) {
	pdpt := g.table(root, idx(va, 4))
	pd := g.table(pdpt, idx(va, 3))
	binary.LittleEndian.PutUint64(g.entry(pd, idx(va, 2)), pa|0xe3) // P RW A D PS
}

// Map4K maps the 4 KiB page at va to pa under root.
func (g *Guest) Map4K(root introspect.Pa, va, pa uint64, user bool) {
	pdpt := g.table(root, idx(va, 4))
	pd := g.table(pdpt, idx(va, 3))
	pt := g.table(pd, idx(va, 2))
	flags := uint64(0x63)
	if user {
		flags |= 4
	}
	binary.LittleEndian.PutUint64(g.entry(pt, idx(va, 1)), pa&^0xfff|flags)
}

// AddressSpace is a process's page tables: Root is the kernel PGD (kernel
// half shared with init_top_pgt) and UserRoot the PTI user copy one page
// above it, which maps only user memory.
type AddressSpace struct {
	Root, UserRoot introspect.Pa
	next           uint64
}

// NewAddressSpace makes an 8 KiB-aligned PGD pair as a PTI kernel does.
func (g *Guest) NewAddressSpace() *AddressSpace {
	g.next = (g.next + 0x1fff) &^ 0x1fff
	root := g.AllocPhys(2 * introspect.PageSize)
	copy(g.RAM[root+8*256:root+introspect.PageSize], g.RAM[g.KernelRoot+8*256:g.KernelRoot+introspect.PageSize])
	return &AddressSpace{Root: root, UserRoot: root + introspect.PageSize, next: UserBase}
}

// UserData maps fresh user pages holding b into as (both PGDs) and
// returns its user address.
func (g *Guest) UserData(as *AddressSpace, b []byte) introspect.Va {
	va := as.next
	n := (uint64(len(b)) + introspect.PageSize - 1) / introspect.PageSize
	if n == 0 {
		n = 1
	}
	pa := g.AllocPhys(n * introspect.PageSize)
	for i := uint64(0); i < n; i++ {
		g.Map4K(as.Root, va+i*introspect.PageSize, uint64(pa)+i*introspect.PageSize, true)
		g.Map4K(as.UserRoot, va+i*introspect.PageSize, uint64(pa)+i*introspect.PageSize, true)
	}
	copy(g.RAM[pa:], b)
	as.next += n * introspect.PageSize
	return introspect.Va(va)
}

// PutU64 writes a value at a direct-map or kernel-image address.
func (g *Guest) PutU64(va introspect.Va, v uint64) {
	binary.LittleEndian.PutUint64(g.RAM[g.pa(va):], v)
}

// PutU32 writes a value at a direct-map or kernel-image address.
func (g *Guest) PutU32(va introspect.Va, v uint32) {
	binary.LittleEndian.PutUint32(g.RAM[g.pa(va):], v)
}

// PutU16 writes a value at a direct-map or kernel-image address.
func (g *Guest) PutU16(va introspect.Va, v uint16) {
	binary.LittleEndian.PutUint16(g.RAM[g.pa(va):], v)
}

// PutBytes writes bytes at a direct-map or kernel-image address.
func (g *Guest) PutBytes(va introspect.Va, b []byte) { copy(g.RAM[g.pa(va):], b) }

// pa translates a direct-map or slid kernel-image address.
func (g *Guest) pa(va introspect.Va) introspect.Pa {
	if img := LinkBase + g.Slide; uint64(va) >= img && uint64(va) < img+2<<20 {
		return introspect.Pa(ImagePhys + uint64(va) - img)
	}
	return KPA(va)
}

// Mount is a struct mount; Mnt is its embedded vfsmount.
type Mount struct {
	Addr, Mnt introspect.Va
	Root      introspect.Va // root dentry
}

// Dentry makes a dentry named name under parent (parent 0: a root dentry,
// its own parent).
func (g *Guest) Dentry(parent introspect.Va, name string, mode uint16) introspect.Va {
	d := g.Alloc(0xc0)
	if parent == 0 {
		parent = d
	}
	g.PutU64(d+DentryParent, uint64(parent))
	nm := g.Alloc(uint64(len(name)) + 1)
	g.PutBytes(nm, []byte(name))
	g.PutU32(d+DentryName+QstrLen, uint32(len(name)))
	g.PutU32(d+DentryName, 0x1234) // hash
	g.PutU64(d+DentryName+QstrName, uint64(nm))
	inode := g.Alloc(0x200)
	g.PutU16(inode, mode)
	g.PutU64(d+DentryInode, uint64(inode))
	return d
}

// NewMount makes a mount of the tree rooted at root on mountpoint of
// parent; parent nil makes the namespace's root mount (its own parent).
func (g *Guest) NewMount(parent *Mount, mountpoint, root introspect.Va) *Mount {
	m := &Mount{Addr: g.Alloc(0x140), Root: root}
	m.Mnt = m.Addr + MountMnt
	p := m.Addr
	if parent != nil {
		p = parent.Addr
	} else {
		mountpoint = root
	}
	g.PutU64(m.Addr+MountParent, uint64(p))
	g.PutU64(m.Addr+MountMountpoint, uint64(mountpoint))
	g.PutU64(m.Mnt+VfsmountRoot, uint64(root))
	return m
}

// File makes a struct file for dentry d in mount m, sharing d's inode.
func (g *Guest) File(m *Mount, d introspect.Va) introspect.Va {
	f := g.Alloc(0x100)
	g.PutU64(f+FilePath, uint64(m.Mnt))
	g.PutU64(f+FilePath+8, uint64(d))
	inode := binary.LittleEndian.Uint64(g.RAM[KPA(d+DentryInode):])
	g.PutU64(f+FileInode, inode)
	return f
}

// Task describes a task to build.
type Task struct {
	PID, TGID uint32
	Comm      string
	Parent    introspect.Va // 0: itself
	Leader    introspect.Va // 0: itself
	Exe       introspect.Va // struct file of the executable; 0: kernel thread (no mm)
	MaxFDs    uint32
	Pwd       [2]introspect.Va // vfsmount, dentry
	Live      uint32
	Signal    introspect.Va // shared signal_struct; 0: a new one
	// AS is the task's address space (mm->pgd); nil leaves pgd zero.
	AS *AddressSpace
}

// NewTask lays out a task_struct with its mm, files_struct, fdtable,
// fs_struct and signal_struct.
func (g *Guest) NewTask(t Task) introspect.Va {
	a := g.Alloc(TaskSize)
	g.layoutTask(a, t)
	return a
}

// InitTask lays out init_task, the idle task of the boot CPU, at its slid
// address in the kernel image, and returns that address.
func (g *Guest) InitTask() introspect.Va {
	a := introspect.Va(Symbols["init_task"] + g.Slide)
	g.layoutTask(a, Task{Comm: "swapper/0"})
	return a
}

// LinkProcesses makes the process list (task_struct.tasks) the ring
// init_task, tasks..., init_task.
func (g *Guest) LinkProcesses(tasks ...introspect.Va) {
	ring := append([]introspect.Va{introspect.Va(Symbols["init_task"] + g.Slide)}, tasks...)
	for i, t := range ring {
		next, prev := ring[(i+1)%len(ring)], ring[(i+len(ring)-1)%len(ring)]
		g.PutU64(t+TaskTasks, uint64(next+TaskTasks))
		g.PutU64(t+TaskTasks+8, uint64(prev+TaskTasks))
	}
}

func (g *Guest) layoutTask(a introspect.Va, t Task) {
	g.PutU32(a+TaskPID, t.PID)
	g.PutU32(a+TaskTGID, t.TGID)
	comm := make([]byte, 16)
	copy(comm[:15], t.Comm)
	g.PutBytes(a+TaskComm, comm)
	par, lead := t.Parent, t.Leader
	if par == 0 {
		par = a
	}
	if lead == 0 {
		lead = a
	}
	g.PutU64(a+TaskRealParent, uint64(par))
	g.PutU64(a+TaskGroupLeader, uint64(lead))
	if t.Exe != 0 {
		mm := g.Alloc(0x400)
		g.PutU64(mm+MMExeFile, uint64(t.Exe))
		if t.AS != nil {
			g.PutU64(mm+MMPgd, uint64(KVA(t.AS.Root)))
		}
		g.PutU64(a+TaskMM, uint64(mm))
	}
	files := g.Alloc(0x100)
	fdt := g.Alloc(0x38)
	max := t.MaxFDs
	if max == 0 {
		max = 64
	}
	arr := g.Alloc(8 * uint64(min(max, 4096)))
	g.PutU32(fdt+FdtMaxFDs, max)
	g.PutU64(fdt+FdtFD, uint64(arr))
	g.PutU64(files+FilesFdt, uint64(fdt))
	g.PutU64(a+TaskFiles, uint64(files))
	if t.Pwd[0] != 0 {
		fs := g.Alloc(0x38)
		g.PutU64(fs+FSPwd, uint64(t.Pwd[0]))
		g.PutU64(fs+FSPwd+8, uint64(t.Pwd[1]))
		g.PutU64(a+TaskFS, uint64(fs))
	}
	sig := t.Signal
	if sig == 0 {
		sig = g.Alloc(0x400)
		live := t.Live
		if live == 0 {
			live = 1
		}
		g.PutU32(sig+SignalLive, live)
	}
	g.PutU64(a+TaskSignal, uint64(sig))
}

// SetFD installs file in slot fd of the task's descriptor table.
func (g *Guest) SetFD(task introspect.Va, fd int, file introspect.Va) {
	files := introspect.Va(binary.LittleEndian.Uint64(g.RAM[KPA(task+TaskFiles):]))
	fdt := introspect.Va(binary.LittleEndian.Uint64(g.RAM[KPA(files+FilesFdt):]))
	arr := introspect.Va(binary.LittleEndian.Uint64(g.RAM[KPA(fdt+FdtFD):]))
	g.PutU64(arr+introspect.Va(8*fd), uint64(file))
}

// SetCurrent makes task the current task of vCPU v.
func (g *Guest) SetCurrent(v int, task introspect.Va) {
	g.PutU64(introspect.Va(g.Regs[v].GSBase)+PerCPUCur, uint64(task))
}

// U64 reads a 64-bit value at a kernel (direct map or image) address.
func (g *Guest) U64(va introspect.Va) uint64 {
	return binary.LittleEndian.Uint64(g.RAM[g.pa(va):])
}
