package qemu

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vmi-exporter/vmi-exporter/internal/testguest"
	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/qemu/qmp"
	"github.com/vmi-exporter/vmi-exporter/introspect/hook"
	"github.com/vmi-exporter/vmi-exporter/introspect/os/linux"
	"github.com/vmi-exporter/vmi-exporter/introspect/paging"
	"github.com/vmi-exporter/vmi-exporter/introspect/vmlinux"
)

// liveGuest boots the project's test guest, or skips when QEMU is absent.
// VMI_QEMU and VMI_QEMU_DATADIR choose another QEMU (the benchmark script
// runs Debian 12's 7.2 this way).
func liveGuest(tb testing.TB) (*testguest.Guest, *testguest.Assets) {
	tb.Helper()
	return testguest.BootForTest(tb, "vq", testguest.Options{})
}

func openLive(tb testing.TB, g *testguest.Guest, withRAM bool) *Driver {
	tb.Helper()
	cfg := Config{GDBSocket: g.GDBSocket, QMPSocket: g.QMPSocket, Timeout: 20 * time.Second}
	if withRAM {
		cfg.RAMPath, cfg.RAMSize = g.RAMPath, uint64(g.RAMSize)
	}
	d, err := Open(context.Background(), cfg, nil)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// kernelOS finds the running kernel (KASLR slide, kernel root) from the
// image's own symbols and BTF.
func kernelOS(tb testing.TB, d linux.Memory, a *testguest.Assets) *linux.OS {
	tb.Helper()
	prof, err := vmlinux.Profile(a.Kernel, vmlinux.Options{})
	if err != nil {
		tb.Fatalf("kernel profile: %v", err)
	}
	o, err := linux.New(d, prof, linux.Options{})
	if err != nil {
		tb.Fatalf("find kernel: %v", err)
	}
	return o
}

// waitRecords reports whether the guest prints at least n workload records
// before the timeout: proof that it runs.
func waitRecords(g *testguest.Guest, n int, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	got := 0
	for range g.Records(ctx) {
		if got++; got >= n {
			return true
		}
	}
	return false
}

func TestLive(t *testing.T) {
	g, assets := liveGuest(t)
	d := openLive(t, g, true)
	if d.VCPUs() != 2 {
		t.Fatalf("VCPUs = %d, want the guest's 2", d.VCPUs())
	}
	if st, err := d.Status(); err != nil || st.Running {
		t.Fatalf("status after attach %+v %v: want stopped", st, err)
	}

	// Registers of every vCPU, and the code at RIP read three ways: page
	// walk over the mapped RAM, gdbstub physical read, gdbstub virtual read.
	kernelSeen := false
	for v := range d.VCPUs() {
		vcpu := introspect.VCPU(v)
		regs, err := d.Registers(vcpu)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("vCPU %d: rip %#x cs %#x cr3 %#x cr4 %#x efer %#x gs %#x kgs %#x", v, regs.RIP, regs.CS.Selector, regs.CR3, regs.CR4, regs.EFER, regs.GSBase, regs.KernelGSBase)
		if !regs.LongMode() || regs.CR0&amd64.CR0PG == 0 || regs.CR3 == 0 {
			t.Fatalf("vCPU %d not in long mode with paging: %+v", v, regs)
		}
		if regs.CPL() != 0 {
			continue
		}
		kernelSeen = true
		// A vCPU stopped in an entry stub before SWAPGS has the per-cpu
		// base still parked in KernelGSBase (seen on CI: GS base 0 at
		// entry_SYSCALL_64); one of the two must hold it.
		if _, err := linux.PerCPUBase(&regs); err != nil {
			t.Errorf("vCPU %d in the kernel without a per-cpu base: %v", v, err)
		}
		mode := paging.Level4
		if regs.FiveLevel() {
			mode = paging.Level5
		}
		root := introspect.Pa(regs.TranslationRoot())
		pa, err := paging.Translate(d, root, introspect.Va(regs.RIP), mode)
		if err != nil {
			t.Fatalf("translate RIP: %v", err)
		}
		n := min(32, introspect.PageSize-int(pa.Offset()))
		viaRAM := make([]byte, n)
		viaPhys := make([]byte, n)
		viaVirt := make([]byte, n)
		if err := d.ReadPhysical(pa, viaRAM); err != nil {
			t.Fatal(err)
		}
		if err := d.ReadPhysicalGDB(pa, viaPhys); err != nil {
			t.Fatal(err)
		}
		th, _ := d.Thread(vcpu)
		if err := d.GDB().ReadVirtual(th, regs.RIP, viaVirt); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(viaRAM, viaVirt) || !bytes.Equal(viaPhys, viaVirt) {
			t.Fatalf("code at RIP differs:\nram  %x\nphys %x\nvirt %x", viaRAM, viaPhys, viaVirt)
		}
		if bytes.Count(viaRAM, []byte{0}) == len(viaRAM) {
			t.Fatalf("code at RIP is all zero")
		}
	}
	if !kernelSeen {
		t.Log("no vCPU stopped in the kernel; code comparison skipped for user vCPUs")
	}

	// A breakpoint on the write path of the workload.
	o := kernelOS(t, d, assets)
	fn, err := o.Symbol("ksys_write")
	if err != nil {
		t.Fatal(err)
	}
	fnPA, err := o.Memory().Translate(o.KernelRoot(), fn)
	if err != nil {
		t.Fatal(err)
	}
	orig := make([]byte, 16)
	if err := d.ReadPhysical(fnPA, orig); err != nil {
		t.Fatal(err)
	}
	if err := d.InsertBreakpoint(fn); err != nil {
		t.Fatal(err)
	}
	if err := g.StartLoop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	vcpus := map[introspect.VCPU]int{}
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		ev, err := d.WaitEvent(ctx)
		cancel()
		if err != nil {
			t.Fatalf("hit %d: %v", i, err)
		}
		if ev.Regs.RIP != uint64(fn) {
			t.Fatalf("hit %d at %#x, want ksys_write %v", i, ev.Regs.RIP, fn)
		}
		vcpus[ev.VCPU]++
		// The guest's memory holds no trace of the breakpoint.
		now := make([]byte, len(orig))
		if err := d.ReadPhysical(fnPA, now); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(now, orig) {
			t.Fatalf("code of ksys_write changed under a breakpoint: %x, was %x", now, orig)
		}
		if err := d.Respond(ev, driver.Response{}); err != nil {
			t.Fatalf("respond: %v", err)
		}
	}
	t.Logf("hits per vCPU: %v", vcpus)
	if err := d.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveBreakpoint(fn); err != nil {
		t.Fatal(err)
	}
	checkSyscallEntry(t, d, o)

	// A wait cancelled by its context leaves the guest stopped.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := d.WaitEvent(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait: %v", err)
	}
	if st, err := d.Status(); err != nil || st.Running {
		t.Errorf("status after cancelled wait %+v %v: want stopped", st, err)
	}

	if err := d.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if !waitRecords(g, 10, 60*time.Second) {
		t.Fatal("guest does not run its workload after detach")
	}
	after := make([]byte, len(orig))
	d2 := openLive(t, g, true)
	if err := d2.ReadPhysical(fnPA, after); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, orig) {
		t.Fatalf("code of ksys_write changed after detach: %x, was %x", after, orig)
	}
	d2.Close()
}

// checkSyscallEntry stops a vCPU on the first instruction of the syscall
// entry, the SWAPGS: kernel mode with the user's GS base still loaded (the
// state CI once caught by chance). The current task must still be found,
// through KernelGSBase, and be a user process.
func checkSyscallEntry(t *testing.T, d *Driver, o *linux.OS) {
	t.Helper()
	entry, err := o.Symbol("entry_SYSCALL_64")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.InsertBreakpoint(entry); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	ev, err := d.WaitEvent(ctx)
	cancel()
	if err != nil {
		t.Fatalf("syscall entry: %v", err)
	}
	regs := ev.Regs
	t.Logf("at entry_SYSCALL_64: cs %#x cr3 %#x gs %#x kgs %#x", regs.CS.Selector, regs.CR3, regs.GSBase, regs.KernelGSBase)
	if regs.RIP != uint64(entry) || regs.CPL() != 0 {
		t.Fatalf("stop at %#x CPL %d, want entry_SYSCALL_64 %v in the kernel", regs.RIP, regs.CPL(), entry)
	}
	base, err := linux.PerCPUBase(&regs)
	if err != nil || uint64(base) != regs.KernelGSBase || base == introspect.Va(regs.GSBase) {
		t.Errorf("per-cpu base %v, %v: want KernelGSBase %#x before SWAPGS", base, err, regs.KernelGSBase)
	}
	task, err := o.CurrentTask(&regs)
	if err != nil || task.MM == 0 || task.Comm == "" {
		t.Errorf("task making the syscall: %+v, %v; want a user process", task, err)
	}
	if err := d.RemoveBreakpoint(entry); err != nil {
		t.Fatal(err)
	}
	if err := d.Respond(ev, driver.Response{}); err != nil {
		t.Fatalf("respond: %v", err)
	}
}

// TestLiveBrokenConnection: Close after the gdbstub connection died must
// reconnect, remove the breakpoints QEMU kept, and let the guest run.
func TestLiveBrokenConnection(t *testing.T) {
	g, assets := liveGuest(t)
	d := openLive(t, g, false) // also exercises the gdbstub read path
	o := kernelOS(t, d, assets)
	fn, err := o.Symbol("ksys_write")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.InsertBreakpoint(fn); err != nil {
		t.Fatal(err)
	}
	d.GDB().Close() // as if the connection broke
	if err := d.Close(); err != nil {
		t.Fatalf("close after a broken connection: %v", err)
	}
	q, err := qmp.Dial(context.Background(), "unix", g.QMPSocket, qmp.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if st, err := q.QueryStatus(); err != nil || !st.Running {
		t.Fatalf("guest not running after close: %+v %v", st, err)
	}
	if err := g.StartLoop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if !waitRecords(g, 10, 60*time.Second) {
		t.Fatal("guest does not run its workload: breakpoint left behind or guest stopped")
	}
}

// countingHandler counts hits and stops the engine after n of them.
type countingHandler struct {
	fn      introspect.Va
	n       int
	hits    int
	wrong   int
	notices []hook.Notice
	stop    context.CancelFunc
}

func (h *countingHandler) HandleHit(hit *hook.Hit) error {
	if hit.Ev.Regs.RIP != uint64(h.fn) || hit.Hook.Tag != "write" {
		h.wrong++
	}
	if h.hits++; h.hits >= h.n {
		h.stop()
	}
	return nil
}

func (h *countingHandler) Notice(n hook.Notice) { h.notices = append(h.notices, n) }

// TestLiveNativeHooks runs the hook.Native engine on the QEMU driver.
func TestLiveNativeHooks(t *testing.T) {
	g, assets := liveGuest(t)
	d := openLive(t, g, true)
	o := kernelOS(t, d, assets)
	fn, err := o.Symbol("ksys_write")
	if err != nil {
		t.Fatal(err)
	}
	eng := hook.NewNative(d, hook.WithFlush(o.Flush))
	if err := eng.Add(hook.Hook{Addr: fn, Root: o.KernelRoot(), Global: true, Tag: "write"}); err != nil {
		t.Fatal(err)
	}
	if err := g.StartLoop(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := &countingHandler{fn: fn, n: 10, stop: cancel}
	if err := eng.Run(ctx, h); err != nil {
		t.Fatal(err)
	}
	if h.hits < 10 || h.wrong != 0 || len(h.notices) != 0 {
		t.Fatalf("hits %d wrong %d notices %+v", h.hits, h.wrong, h.notices)
	}
	if err := eng.Close(); err != nil {
		t.Fatalf("engine close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("driver close: %v", err)
	}
	if !waitRecords(g, 10, 60*time.Second) {
		t.Fatal("guest does not run its workload after the engine closed")
	}
}
