// Package windows implements the collector's view of a Windows x64 guest:
// its identity and the seed monitor's four probes, each a kernel function
// hooked at its entry and decoded with the Windows OS layer. The events are
// the same kinds, with the same fields, as the Linux probes emit.
//
//   - file.create: NtCreateFile(FileHandle, DesiredAccess, ObjectAttributes,
//     ...). The path is ObjectAttributes->ObjectName, joined with the path
//     of the RootDirectory handle's object when it is set; it is read from
//     the caller's (user) memory, so a paged-out page makes Decode return
//     the translation error and the engine injects #PF and retries.
//
//   - file.write: NtWriteFile(FileHandle, ...). The handle is resolved
//     through the caller's handle table (kernel handles through System's);
//     the path is the FILE_OBJECT's device path and file name. A handle to
//     something other than a file (a pipe is a file too; an event, a
//     section are not), a free or invalid handle are skipped
//     (collector.ErrSkip, counted by the collector).
//
//   - process.start: PspInsertProcess(NewProcess, Parent, ...): pid, parent
//     pid, image name, image base and PEB of the new EPROCESS. As the seed
//     does, the Parent argument is checked against the EPROCESS's
//     InheritedFromUniqueProcessId; a mismatch is counted and logged (the
//     event keeps the EPROCESS field), not fatal.
//
//   - process.exit: MmCleanProcessAddressSpace(Process): pid, parent pid,
//     image name and image base of the exiting process, and its exit code
//     (EPROCESS.ExitStatus: the ExitProcess value or the NTSTATUS that
//     ended it; none while it still reads STATUS_PENDING).
//
//   - file.rename and file.delete: NtSetInformationFile(FileHandle,
//     IoStatusBlock, FileInformation, Length, FileInformationClass), the
//     one system call through which Win32 MoveFileEx, DeleteFile and
//     SetFileInformationByHandle reach the file system. The class is read
//     first (other classes are skipped); FileRenameInformation(Ex) gives
//     a rename from the handle's file to FILE_RENAME_INFORMATION's name
//     (joined to its RootDirectory's path), FileDispositionInformation
//     (Ex) that sets delete a delete of the handle's file. Not seen:
//     deletes by FILE_DELETE_ON_CLOSE at NtCreateFile, and the in-kernel
//     callers of IoSetInformation.
//
// Not yet: process.exec (PspInsertProcess is the start event and the
// image name is already its; no separate exec exists on Windows).
package windows

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"

	"github.com/vmi-exporter/vmi-exporter/collector"
	"github.com/vmi-exporter/vmi-exporter/internal/ratelog"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	oswin "github.com/vmi-exporter/vmi-exporter/introspect/os/windows"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
	"github.com/vmi-exporter/vmi-exporter/introspect/profile"
)

// Hooked kernel functions, one per event kind (those of the seed).
const (
	FuncFileCreate   = "NtCreateFile"
	FuncFileWrite    = "NtWriteFile"
	FuncProcessStart = "PspInsertProcess"
	FuncProcessExit  = "MmCleanProcessAddressSpace"
	// FuncFileSetInfo gives file.rename and file.delete (one probe for
	// both: a function is hooked once).
	FuncFileSetInfo = "NtSetInformationFile"
)

// Guest is a Windows guest's OS layer as the collector sees it. It
// implements collector.GuestOS.
type Guest struct {
	os     *oswin.OS
	kernel oswin.Kernel
	root   introspect.Pa
	log    *slog.Logger

	parentMismatch atomic.Uint64
	warn           *ratelog.Logger // guest-triggered warnings
}

var _ collector.GuestOS = (*Guest)(nil)

// New returns the collector's view of the kernel o reads. root is any
// translation root that maps the kernel (a vCPU's CR3); the probes use the
// System process's. log may be nil.
func New(o *oswin.OS, k oswin.Kernel, root introspect.Pa, log *slog.Logger) (*Guest, error) {
	if log == nil {
		log = slog.Default()
	}
	kr, err := o.KernelRoot(root)
	if err != nil {
		return nil, fmt.Errorf("kernel translation root: %w", err)
	}
	return &Guest{os: o, kernel: k, root: kr, log: log, warn: ratelog.New(log, 0)}, nil
}

// ProfileSource finds the profile of a kernel from its CodeView record:
// a *profile.SymbolStore, or a profile.ISFFile given by the user.
type ProfileSource interface {
	ForCodeView(ctx context.Context, cv profile.CodeView) (*profile.ISF, error)
}

// Attach finds the kernel of a Windows guest from vCPU 0 (which should be
// paused), loads its profile from src by the kernel's CodeView record
// (a store downloads the PDB on a miss if it has a server), and returns
// the guest's collector view.
func Attach(ctx context.Context, d driver.Driver, src ProfileSource, log *slog.Logger) (*Guest, error) {
	regs, err := d.Registers(0)
	if err != nil {
		return nil, fmt.Errorf("registers of vCPU 0: %w", err)
	}
	mode := paging.Level4
	if regs.FiveLevel() {
		mode = paging.Level5
	}
	mem := paging.NewMemory(d, mode)
	k, err := oswin.FindKernel(mem, &regs)
	if err != nil {
		return nil, err
	}
	isf, err := src.ForCodeView(ctx, k.CodeView)
	if err != nil {
		return nil, fmt.Errorf("profile for %s %s: %w", k.CodeView.PDB, k.CodeView.Info().Key(), err)
	}
	o, err := oswin.New(isf.Profile, mem, k.Base)
	if err != nil {
		return nil, err
	}
	return New(o, k, oswin.Root(&regs), log)
}

// OS returns "windows".
func (g *Guest) OS() string { return "windows" }

// Kernel returns the kernel's PDB name, GUID and age.
func (g *Guest) Kernel() string {
	return g.kernel.CodeView.PDB + "/" + g.kernel.CodeView.Info().Key()
}

// OSLayer returns the Windows OS layer.
func (g *Guest) OSLayer() *oswin.OS { return g.os }

// ParentMismatches counts PspInsertProcess hits whose Parent argument's pid
// differed from the new process's InheritedFromUniqueProcessId.
func (g *Guest) ParentMismatches() uint64 { return g.parentMismatch.Load() }

// Counters implements collector.CounterSource: the parent mismatches are
// exported as vmi_session_events_total{counter="windows_parent_mismatches"}.
func (g *Guest) Counters() map[string]uint64 {
	return map[string]uint64{"windows_parent_mismatches": g.parentMismatch.Load()}
}

// Probes returns the probes of the enabled kinds among file.create,
// file.write, file.rename, file.delete, process.start and process.exit;
// other kinds come from the hook engine and are ignored here. Renames and
// deletes share the NtSetInformationFile probe, listed under file.rename
// when that kind is enabled, else under file.delete; its decoder skips
// the class of a kind that is not enabled.
func (g *Guest) Probes(enabled []collector.Kind) ([]collector.Probe, error) {
	rename, del := slices.Contains(enabled, collector.KindFileRename), slices.Contains(enabled, collector.KindFileDelete)
	setInfo := collector.ProbeSpec{Kind: collector.KindFileRename, Func: FuncFileSetInfo, Decode: g.decodeSetInfo(rename, del), Optional: true}
	if !rename {
		setInfo.Kind = collector.KindFileDelete
	}
	return collector.SelectProbes(enabled, []collector.ProbeSpec{
		setInfo,
		{Kind: collector.KindFileCreate, Func: FuncFileCreate, Decode: g.decodeCreate},
		{Kind: collector.KindFileWrite, Func: FuncFileWrite, Decode: g.decodeWrite},
		{Kind: collector.KindProcessStart, Func: FuncProcessStart, Decode: g.decodeStart},
		{Kind: collector.KindProcessExit, Func: FuncProcessExit, Decode: g.decodeExit},
	}, g.os.Symbol, g.root)
}

func skip(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, collector.ErrSkip)...)
}

// process reads what an event says about an EPROCESS.
func (g *Guest) process(root introspect.Pa, proc introspect.Va, p *collector.Process) error {
	pid, err := g.os.ProcessID(root, proc)
	if err != nil {
		return err
	}
	ppid, err := g.os.ParentID(root, proc)
	if err != nil {
		return err
	}
	name, err := g.os.ImageFileName(root, proc)
	if err != nil {
		return err
	}
	base, err := g.os.ImageBase(root, proc)
	if err != nil {
		return err
	}
	peb, err := g.os.PEB(root, proc)
	if err != nil {
		return err
	}
	*p = collector.Process{PID: pid, PPID: ppid, Name: name, ImageBase: uint64(base), PEB: uint64(peb)}
	return nil
}

// begin flushes cached translations (the guest ran since the last hit)
// and returns the hit's registers, address space and current process.
func (g *Guest) begin(h *hook.Hit) (*amd64.Registers, introspect.Pa, introspect.Va, error) {
	g.os.Memory().Cache.Flush()
	regs := &h.Ev.Regs
	proc, err := g.os.CurrentProcess(regs)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("current process: %w", err)
	}
	return regs, oswin.Root(regs), proc, nil
}

func (g *Guest) decodeCreate(h *hook.Hit, ev *collector.Event) error {
	regs, root, proc, err := g.begin(h)
	if err != nil {
		return err
	}
	oa, err := g.os.Arg(regs, 2)
	if err != nil {
		return err
	}
	name, ok, err := g.os.ObjectAttributesName(root, proc, introspect.Va(oa))
	if err != nil {
		return fmt.Errorf("ObjectAttributes %#x: %w", oa, err)
	}
	if !ok || name == "" {
		return skip("ObjectAttributes %#x without a name", oa)
	}
	if err := g.process(root, proc, &ev.Process); err != nil {
		return fmt.Errorf("caller: %w", err)
	}
	ev.Path = name
	return nil
}

func (g *Guest) decodeWrite(h *hook.Hit, ev *collector.Event) error {
	regs, root, proc, err := g.begin(h)
	if err != nil {
		return err
	}
	handle, err := g.os.Arg(regs, 0)
	if err != nil {
		return err
	}
	path, err := g.filePath(root, proc, handle)
	if err != nil {
		return err
	}
	if err := g.process(root, proc, &ev.Process); err != nil {
		return fmt.Errorf("caller: %w", err)
	}
	ev.Path = path
	return nil
}

// filePath returns the path of the file a handle of proc refers to;
// handles to other objects, free or invalid handles are skipped.
func (g *Guest) filePath(root introspect.Pa, proc introspect.Va, handle uint64) (string, error) {
	obj, err := g.os.HandleToObject(root, proc, handle)
	if errors.Is(err, oswin.ErrNoObject) || errors.Is(err, oswin.ErrBadHandle) {
		return "", skip("handle %#x: %v", handle, err)
	}
	if err != nil {
		return "", fmt.Errorf("handle %#x: %w", handle, err)
	}
	typ, err := g.os.ObjectTypeName(root, obj)
	if err != nil {
		return "", fmt.Errorf("handle %#x: %w", handle, err)
	}
	if typ != "File" {
		return "", skip("handle %#x is a %s, not a file", handle, typ)
	}
	path, err := g.os.FileObjectPath(root, obj)
	if err != nil {
		return "", fmt.Errorf("handle %#x: %w", handle, err)
	}
	return path, nil
}

// decodeSetInfo decodes NtSetInformationFile(FileHandle, IoStatusBlock,
// FileInformation, Length, FileInformationClass): the rename classes give
// a file.rename (the handle's file to the new name), the disposition
// classes that set delete a file.delete; other classes are skipped before
// any read but the class (the fifth argument, on the stack).
func (g *Guest) decodeSetInfo(rename, del bool) func(*hook.Hit, *collector.Event) error {
	return func(h *hook.Hit, ev *collector.Event) error {
		regs, root, proc, err := g.begin(h)
		if err != nil {
			return err
		}
		class, err := g.os.Arg(regs, 4)
		if err != nil {
			return err
		}
		class &= 0xffffffff
		isRename := class == oswin.FileRenameInformation || class == oswin.FileRenameInformationEx
		isDelete := class == oswin.FileDispositionInformation || class == oswin.FileDispositionInformationEx
		if !(isRename && rename) && !(isDelete && del) {
			return skip("information class %d", class)
		}
		info, err := g.os.Arg(regs, 2)
		if err != nil {
			return err
		}
		if isDelete {
			yes, err := g.os.DispositionDeletes(root, introspect.Va(info), class)
			if err != nil {
				return err
			}
			if !yes {
				return skip("disposition clears delete")
			}
		}
		handle, err := g.os.Arg(regs, 0)
		if err != nil {
			return err
		}
		path, err := g.filePath(root, proc, handle)
		if err != nil {
			return err
		}
		if isRename {
			length, err := g.os.Arg(regs, 3)
			if err != nil {
				return err
			}
			to, err := g.os.RenameTarget(root, proc, introspect.Va(info), length&0xffffffff)
			if err != nil {
				return err
			}
			ev.Kind, ev.OldPath, ev.Path = collector.KindFileRename, path, to
		} else {
			ev.Kind, ev.Path, ev.Syscall = collector.KindFileDelete, path, "disposition"
		}
		if err := g.process(root, proc, &ev.Process); err != nil {
			return fmt.Errorf("caller: %w", err)
		}
		return nil
	}
}

func (g *Guest) processArg(regs *amd64.Registers, i int) (introspect.Va, error) {
	a, err := g.os.Arg(regs, i)
	if err != nil {
		return 0, err
	}
	if !oswin.IsKernelVA(introspect.Va(a)) {
		return 0, fmt.Errorf("argument %d = %#x is not an EPROCESS address: %w", i, a, oswin.ErrCorrupt)
	}
	return introspect.Va(a), nil
}

func (g *Guest) decodeStart(h *hook.Hit, ev *collector.Event) error {
	g.os.Memory().Cache.Flush()
	regs := &h.Ev.Regs
	root := oswin.Root(regs)
	proc, err := g.processArg(regs, 0)
	if err != nil {
		return err
	}
	parent, err := g.processArg(regs, 1)
	if err != nil {
		return err
	}
	if err := g.process(root, proc, &ev.Process); err != nil {
		return fmt.Errorf("new process: %w", err)
	}
	ppid, err := g.os.ProcessID(root, parent)
	if err != nil {
		return fmt.Errorf("parent process: %w", err)
	}
	if ppid != ev.Process.PPID {
		n := g.parentMismatch.Add(1)
		// The guest can trigger this on every process start: rate-limited.
		g.warn.Warn("PspInsertProcess Parent argument differs from InheritedFromUniqueProcessId",
			"pid", ev.Process.PID, "parent_arg_pid", ppid, "inherited_from", ev.Process.PPID, "count", n)
	}
	return nil
}

func (g *Guest) decodeExit(h *hook.Hit, ev *collector.Event) error {
	g.os.Memory().Cache.Flush()
	regs := &h.Ev.Regs
	proc, err := g.processArg(regs, 0)
	if err != nil {
		return err
	}
	if err := g.process(oswin.Root(regs), proc, &ev.Process); err != nil {
		return fmt.Errorf("exiting process: %w", err)
	}
	ev.Process.PEB = 0 // the address space is being torn down
	// PspExitThread stores the status in the EPROCESS before the last
	// thread tears the address space down; a process still "pending" has
	// none to report.
	// A profile without the field gives no exit code, not an error.
	st, err := g.os.ExitStatus(oswin.Root(regs), proc)
	switch {
	case errors.Is(err, profile.ErrNotFound):
	case err != nil:
		return fmt.Errorf("exiting process: %w", err)
	case st != oswin.StatusPending:
		c := int32(st)
		ev.ExitCode = &c
	}
	return nil
}

// SourceFor returns where a guest's Windows profile comes from: the ISF
// file the configuration names, or else a symbol store in its cache
// directory that downloads from Microsoft's symbol server on a miss.
func SourceFor(pc collector.ProfileConfig) (ProfileSource, error) {
	if pc.ISF != "" {
		return profile.ISFFile(pc.ISF), nil
	}
	if pc.CacheDir == "" {
		return nil, errors.New("windows profile: set profile.isf or profile.cache_dir (a symbol store of <pdb>/<GUID><age>.json[.xz])")
	}
	return profile.NewSymbolStore(pc.CacheDir), nil
}
