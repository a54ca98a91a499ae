package windows_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vmi-exporter/vmi-exporter/internal/wintest"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/windows"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
)

// scene is a guest with a few processes, files and handles of every kind.
type scene struct {
	g                      *wintest.Guest
	os                     *windows.OS
	explorer, notepad, cmd *wintest.Process
	file, dir, kfile       introspect.Va
	event                  introspect.Va
	oa, oaStr              introspect.Va
}

const (
	hFile     = 0x44
	hDir      = 0x48
	hEvent    = 0x4c
	hLevel1   = (3*256 + 7) * 4           // in the 4th leaf page
	hLevel2   = (2*256*512 + 256 + 9) * 4 // in the 3rd mid page
	hKernel   = 0xffffffff80000124
	hFree     = 0x50
	hTooLarge = 256 * 4 // beyond a level-0 table
)

func newScene(t testing.TB, name string) *scene {
	t.Helper()
	isf, err := wintest.LoadProfile(name)
	if err != nil {
		t.Fatal(err)
	}
	g, err := wintest.New(isf, wintest.Options{VCPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	s := &scene{g: g}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	s.explorer, err = g.NewProcess("explorer.exe", 1234, g.System, 0)
	must(err)
	s.notepad, err = g.NewProcess("notepad.exe", 4242, s.explorer, 1)
	must(err)
	s.cmd, err = g.NewProcess("cmd.exe", 5000, s.explorer, 2)
	must(err)
	s.file, err = g.NewFile(`\Users\test\Documents\a.txt`)
	must(err)
	s.dir, err = g.NewFile(`\Users\test`)
	must(err)
	s.kfile, err = g.NewFile(`\Windows\System32\config\SYSTEM`)
	must(err)
	s.event, err = g.NewObject("Event", 0x18, "", 0, false)
	must(err)
	for _, p := range []*wintest.Process{s.explorer, s.notepad, s.cmd} {
		must(g.SetHandle(p, hFile, s.file))
		must(g.SetHandle(p, hDir, s.dir))
		must(g.SetHandle(p, hEvent, s.event))
	}
	must(g.SetHandle(s.notepad, hLevel1, s.file))
	must(g.SetHandle(s.cmd, hLevel1, s.file))
	must(g.SetHandle(s.cmd, hLevel2, s.file))
	must(g.SetHandle(s.notepad, hKernel, s.kfile))
	s.oa, s.oaStr, err = g.ObjectAttributes(s.notepad, hDir, `Desktop\new.txt`)
	must(err)
	regs, err := g.M.Registers(0)
	must(err)
	mem := paging.NewMemory(g.M, paging.Level4)
	k, err := windows.FindKernel(mem, &regs)
	must(err)
	if k.Base != g.Base || k.CodeView != g.CodeView {
		t.Fatalf("FindKernel = %v %+v, want %v %+v", k.Base, k.CodeView, g.Base, g.CodeView)
	}
	s.os, err = windows.New(g.Prof, mem, k.Base)
	must(err)
	return s
}

func TestWindowsOS(t *testing.T) {
	for _, name := range wintest.ProfileNames {
		t.Run(name, func(t *testing.T) {
			s := newScene(t, name)
			g, o := s.g, s.os
			if want := name != "win7"; o.Win8Handles() != want || o.HasUserDirectoryTableBase() != want {
				t.Errorf("Win8Handles %v, UserDTB %v", o.Win8Handles(), o.HasUserDirectoryTableBase())
			}
			root := g.Kernel.Root
			sys, err := o.SystemProcess(root)
			if err != nil || sys != g.System.EPROCESS {
				t.Fatalf("SystemProcess %v %v", sys, err)
			}
			if kr, err := o.KernelRoot(root); err != nil || kr != g.Kernel.Root {
				t.Errorf("KernelRoot %v %v", kr, err)
			}
			procs, err := o.Processes(root)
			if err != nil || len(procs) != 4 || procs[0] != sys || procs[2] != s.notepad.EPROCESS {
				t.Errorf("Processes %v %v", procs, err)
			}

			// vCPU 1 runs notepad, entering NtCreateFile with 5 stack args.
			regs, err := g.Regs(1, s.notepad, "NtCreateFile", 0x1000, 0x80100080, uint64(s.oa), 0x2000, 0, 0x80, 7, 2)
			if err != nil {
				t.Fatal(err)
			}
			cur, err := o.CurrentProcess(&regs)
			if err != nil || cur != s.notepad.EPROCESS {
				t.Fatalf("CurrentProcess %v %v", cur, err)
			}
			if th, _ := o.CurrentThread(&regs); th != s.notepad.Thread {
				t.Errorf("CurrentThread %v", th)
			}
			pr := windows.Root(&regs)
			if a, err := o.Arg(&regs, 2); err != nil || a != uint64(s.oa) {
				t.Errorf("arg 2 %#x %v", a, err)
			}
			if a, err := o.Arg(&regs, 6); err != nil || a != 7 {
				t.Errorf("arg 6 %#x %v", a, err)
			}
			pid, _ := o.ProcessID(pr, cur)
			ppid, _ := o.ParentID(pr, cur)
			nm, _ := o.ImageFileName(pr, cur)
			ib, _ := o.ImageBase(pr, cur)
			peb, _ := o.PEB(pr, cur)
			if pid != 4242 || ppid != 1234 || nm != "notepad.exe" || ib != s.notepad.ImageBase || peb != s.notepad.PEB {
				t.Errorf("process %d %d %q %v %v", pid, ppid, nm, ib, peb)
			}
			k, u, err := o.TranslationRoots(pr, cur)
			if err != nil || k != s.notepad.AS.Root || u != s.notepad.UserRoot {
				t.Errorf("roots %v %v %v", k, u, err)
			}
			name, ok, err := o.ObjectAttributesName(pr, cur, s.oa)
			if want := g.VolumePath + `\Users\test\Desktop\new.txt`; err != nil || !ok || name != want {
				t.Errorf("ObjectAttributesName %q %v %v, want %q", name, ok, err, want)
			}

			for _, c := range []struct {
				p      *wintest.Process
				handle uint64
				want   introspect.Va
			}{
				{s.notepad, hFile, s.file}, {s.notepad, hLevel1, s.file}, {s.cmd, hLevel1, s.file},
				{s.cmd, hLevel2, s.file}, {s.notepad, hKernel, s.kfile}, {s.explorer, hEvent, s.event},
			} {
				obj, err := o.HandleToObject(pr, c.p.EPROCESS, c.handle)
				if err != nil || obj != c.want {
					t.Errorf("%s handle %#x = %v %v, want %v", c.p.Name, c.handle, obj, err, c.want)
				}
			}
			if typ, err := o.ObjectTypeName(pr, s.file); err != nil || typ != "File" {
				t.Errorf("file type %q %v", typ, err)
			}
			if typ, err := o.ObjectTypeName(pr, s.event); err != nil || typ != "Event" {
				t.Errorf("event type %q %v", typ, err)
			}
			if p, err := o.FileObjectPath(pr, s.kfile); err != nil || p != `\Device\HarddiskVolume3\Windows\System32\config\SYSTEM` {
				t.Errorf("kernel file path %q %v", p, err)
			}
			if p, err := o.ObjectPath(pr, g.Volume); err != nil || p != `\Device\HarddiskVolume3` {
				t.Errorf("volume path %q %v", p, err)
			}
			if _, err := o.HandleToObject(pr, s.notepad.EPROCESS, hFree); !errors.Is(err, windows.ErrNoObject) {
				t.Errorf("free handle: %v", err)
			}
			if _, err := o.HandleToObject(pr, s.explorer.EPROCESS, hTooLarge); !errors.Is(err, windows.ErrBadHandle) {
				t.Errorf("handle beyond level 0: %v", err)
			}
			if _, err := o.HandleToObject(pr, s.explorer.EPROCESS, hLevel1); !errors.Is(err, windows.ErrBadHandle) {
				t.Errorf("unallocated leaf: %v", err)
			}

			// A paged-out OBJECT_ATTRIBUTES page is a page fault at its address.
			if err := g.PageOut(s.notepad.AS, s.oa); err != nil {
				t.Fatal(err)
			}
			o.Memory().Cache.Flush()
			_, _, err = o.ObjectAttributesName(pr, cur, s.oa)
			if va, ok := paging.PageFault(err); !ok || va != s.oa+0x10 && va != s.oa+0x8 {
				t.Errorf("paged-out OA: %v (fault %v %v)", err, va, ok)
			}

			// In user mode the KPCR is in KernelGSBase.
			regs.CS.Selector = 0x33
			regs.GSBase, regs.KernelGSBase = uint64(wintest.TEB), uint64(g.KPCR[1])
			if k, err := windows.KPCR(&regs); err != nil || k != g.KPCR[1] {
				t.Errorf("user-mode KPCR %v %v", k, err)
			}
			regs.KernelGSBase = 0
			if _, err := windows.KPCR(&regs); !errors.Is(err, windows.ErrNoKPCR) {
				t.Errorf("no KPCR: %v", err)
			}
		})
	}
}

// Forged structures give the package's sentinel errors.
func TestForgedStructures(t *testing.T) {
	for _, name := range []string{"win10-subset", "win7"} {
		t.Run(name, func(t *testing.T) {
			s := newScene(t, name)
			g, o := s.g, s.os
			root := g.Kernel.Root
			put := func(va introspect.Va, v uint64) {
				t.Helper()
				var b [8]byte
				for i := range b {
					b[i] = byte(v >> (8 * i))
				}
				if err := g.Kernel.Write(va, b[:]); err != nil {
					t.Fatal(err)
				}
				o.Memory().Cache.Flush()
				o.FlushCaches()
			}
			get := func(va introspect.Va) uint64 {
				var b [8]byte
				if err := g.Kernel.Read(va, b[:]); err != nil {
					t.Fatal(err)
				}
				var v uint64
				for i := range b {
					v |= uint64(b[i]) << (8 * i)
				}
				return v
			}
			// Table code of level 3.
			tc := s.explorer.HandleTable + g.Off("_HANDLE_TABLE", "TableCode")
			orig := get(tc)
			put(tc, orig|3)
			if _, err := o.HandleToObject(root, s.explorer.EPROCESS, hFile); !errors.Is(err, windows.ErrCorrupt) {
				t.Errorf("level 3: %v", err)
			}
			// Table page in user space.
			put(tc, 0x7fff0000)
			if _, err := o.HandleToObject(root, s.explorer.EPROCESS, hFile); !errors.Is(err, windows.ErrCorrupt) {
				t.Errorf("user-space table: %v", err)
			}
			put(tc, orig)
			// Handles that cannot be.
			for _, h := range []uint64{0, 1, 0x100000000, 0x7fffffff_fffffffc} {
				if _, err := o.HandleToObject(root, s.explorer.EPROCESS, h); !errors.Is(err, windows.ErrBadHandle) {
					t.Errorf("handle %#x: %v", h, err)
				}
			}
			// A type index of 0 (cookie-decoded or plain).
			hdr := o.ObjectHeader(s.event)
			tiVA := hdr + g.Off("_OBJECT_HEADER", "TypeIndex")
			ti := get(tiVA)
			idx0 := uint64(0)
			if o.Win8Handles() {
				idx0 = uint64(byte(hdr>>8) ^ wintest.HeaderCookie)
			}
			put(tiVA, ti&^0xff|idx0)
			if _, err := o.ObjectTypeName(root, s.event); !errors.Is(err, windows.ErrCorrupt) {
				t.Errorf("type index 0: %v", err)
			}
			put(tiVA, ti)
			// An object directory that names itself: a loop.
			ni := o.ObjectHeader(g.DeviceDir) - 0x20 - 0x20 // creator info is nearer
			dirVA := ni + g.Off("_OBJECT_HEADER_NAME_INFO", "Directory")
			od := get(dirVA)
			put(dirVA, uint64(g.DeviceDir))
			if _, err := o.ObjectPath(root, g.Volume); !errors.Is(err, windows.ErrCorrupt) {
				t.Errorf("directory loop: %v", err)
			}
			put(dirVA, od)
			if p, err := o.ObjectPath(root, g.Volume); err != nil || p != g.VolumePath {
				t.Errorf("restored path %q %v", p, err)
			}
			// UNICODE_STRING with an odd length, or a NULL buffer.
			fn := s.file + g.Off("_FILE_OBJECT", "FileName")
			us := get(fn)
			put(fn, us&^0xffff|7)
			if _, err := o.FileObjectPath(root, s.file); !errors.Is(err, windows.ErrCorrupt) {
				t.Errorf("odd length: %v", err)
			}
			put(fn, us)
			b := get(fn + 8)
			put(fn+8, 0)
			if _, err := o.FileObjectPath(root, s.file); !errors.Is(err, windows.ErrCorrupt) {
				t.Errorf("NULL buffer: %v", err)
			}
			put(fn+8, b)
			// A process list that loops.
			links := s.cmd.EPROCESS + g.Off("_EPROCESS", "ActiveProcessLinks")
			nx := get(links)
			put(links, uint64(s.explorer.EPROCESS+g.Off("_EPROCESS", "ActiveProcessLinks")))
			if _, err := o.Processes(root); !errors.Is(err, windows.ErrCorrupt) {
				t.Errorf("looping list: %v", err)
			}
			put(links, nx)
			// No kernel below a user-space LSTAR, nor within the bound.
			regs, _ := g.M.Registers(0)
			regs.LSTAR = 0x401000
			if _, err := windows.FindKernel(o.Memory(), &regs); !errors.Is(err, windows.ErrNoKernel) {
				t.Errorf("user LSTAR: %v", err)
			}
			if _, err := windows.FindKernelFrom(o.Memory(), root, g.Symbol("NtCreateFile"), 0x10000); !errors.Is(err, windows.ErrNoKernel) {
				t.Errorf("bounded scan: %v", err)
			}
		})
	}
}

// Images that are not the kernel, and MZ bytes that are not images, lying
// between the kernel base and the syscall entry are skipped.
func TestFindKernelSkipsDecoys(t *testing.T) {
	for _, name := range []string{"win10-subset", "win7"} {
		t.Run(name, func(t *testing.T) {
			s := newScene(t, name)
			g := s.g
			hdr := make([]byte, introspect.PageSize)
			if err := g.Kernel.Read(g.Base, hdr); err != nil {
				t.Fatal(err)
			}
			hal := append([]byte(nil), hdr...)
			i := bytes.Index(hal, []byte(g.CodeView.PDB))
			copy(hal[i:], "hal.pdb\x00")
			garbage := make([]byte, introspect.PageSize)
			copy(garbage, "MZ")
			garbage[0x3c] = 0xff
			garbage[0x3d] = 0xff
			for va, b := range map[introspect.Va][]byte{g.Base + 0x20000: hal, g.Base + 0x21000: garbage} {
				if _, err := g.Kernel.MapNew(va, 1, 0); err != nil {
					t.Fatal(err)
				}
				if err := g.Kernel.Write(va, b); err != nil {
					t.Fatal(err)
				}
			}
			o := s.os
			if cv, err := windows.ReadCodeView(o.Memory(), g.Kernel.Root, g.Base+0x20000); err != nil || cv.PDB != "hal.pdb" {
				t.Fatalf("decoy CodeView %+v %v", cv, err)
			}
			regs, _ := g.M.Registers(0)
			k, err := windows.FindKernel(o.Memory(), &regs)
			if err != nil || k.Base != g.Base {
				t.Errorf("FindKernel %v %v, want %v", k.Base, err, g.Base)
			}
		})
	}
}
