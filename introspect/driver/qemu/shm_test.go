package qemu

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
)

// makeSHM lays out a shared file as the plugin does (vmi-hooks.c's
// qemu_plugin_install), for tests without QEMU.
func makeSHM(vcpus, maxHooks, ring int) []byte {
	le := binary.LittleEndian
	tableOff := shmHeaderSize
	mailboxOff := (tableOff + 8 + 8*maxHooks + 63) &^ 63
	countersOff := mailboxOff + shmMailboxSize*vcpus
	ringOff := countersOff + shmCounterSize*vcpus
	total := (ringOff + vcpus*(shmRingHeader+ring*shmRecordSize) + 4095) &^ 4095
	b := make([]byte, total)
	mode := shmModeHeld
	if ring > 0 {
		mode = shmModeAsync
	}
	le.PutUint32(b[hdrVersion:], shmVersion)
	le.PutUint32(b[hdrHeaderSize:], shmHeaderSize)
	le.PutUint32(b[hdrVCPUs:], uint32(vcpus))
	le.PutUint32(b[hdrMode:], uint32(mode))
	le.PutUint32(b[hdrHoldUS:], 20000)
	le.PutUint32(b[hdrMaxHooks:], uint32(maxHooks))
	le.PutUint32(b[hdrMailboxSize:], shmMailboxSize)
	le.PutUint32(b[hdrRingEntries:], uint32(ring))
	le.PutUint64(b[hdrTableOff:], uint64(tableOff))
	le.PutUint64(b[hdrMailboxOff:], uint64(mailboxOff))
	le.PutUint64(b[hdrCountersOff:], uint64(countersOff))
	le.PutUint64(b[hdrRingOff:], uint64(ringOff))
	le.PutUint64(b[hdrTotalSize:], uint64(total))
	le.PutUint64(b[hdrHeartbeatTimeout:], uint64(500*time.Millisecond))
	le.PutUint64(b[hdrMagic:], shmMagic)
	return b
}

// putRegs fills the 32 register slots at b with 0x1000+slot and returns
// the mask of them all.
func putRegs(b []byte) uint64 {
	for i := range shmRegs {
		binary.LittleEndian.PutUint64(b[8*i:], 0x1000+uint64(i))
	}
	return 1<<shmRegs - 1
}

func TestParseSHMHeader(t *testing.T) {
	b := makeSHM(2, 256, 0)
	h, err := parseSHMHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if h.VCPUs != 2 || h.MaxHooks != 256 || h.Mode != shmModeHeld || h.MailboxOff != 2368 {
		t.Fatalf("header %+v", h)
	}
	a := makeSHM(3, 16, 8)
	if h, err := parseSHMHeader(a); err != nil || h.RingEntries != 8 || h.Mode != shmModeAsync {
		t.Fatalf("async header %+v %v", h, err)
	}
	bad := []struct {
		name string
		off  int
		val  uint64
		size int
	}{
		{"magic", hdrMagic, 1, 8},
		{"version 1 (no doorbell)", hdrVersion, 1, 4},
		{"version 3", hdrVersion, 3, 4},
		{"vcpus", hdrVCPUs, 0, 4},
		{"too many vcpus", hdrVCPUs, 100000, 4},
		{"mode", hdrMode, 7, 4},
		{"mailbox size", hdrMailboxSize, 512, 4},
		{"hooks", hdrMaxHooks, 1 << 20, 4},
		{"ring in held mode", hdrRingEntries, 4, 4},
		{"table in header", hdrTableOff, 8, 8},
		{"mailboxes past end", hdrMailboxOff, uint64(len(b)) - 8, 8},
		{"unaligned", hdrCountersOff, 2369, 8},
		{"total past file", hdrTotalSize, uint64(len(b)) + 4096, 8},
		{"huge offset", hdrRingOff, 1 << 63, 8},
	}
	for _, c := range bad {
		x := append([]byte(nil), b...)
		if c.size == 4 {
			binary.LittleEndian.PutUint32(x[c.off:], uint32(c.val))
		} else {
			binary.LittleEndian.PutUint64(x[c.off:], c.val)
		}
		if _, err := parseSHMHeader(x); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	if _, err := parseSHMHeader(b[:100]); err == nil {
		t.Error("short file accepted")
	}
	// The doorbell is a free-running counter: any value, wrapped too.
	x := append([]byte(nil), b...)
	binary.LittleEndian.PutUint32(x[hdrDoorbell:], 0xffffffff)
	if _, err := parseSHMHeader(x); err != nil {
		t.Errorf("doorbell at its wrap: %v", err)
	}
}

func TestDecodeMailbox(t *testing.T) {
	mb := make([]byte, shmMailboxSize)
	le := binary.LittleEndian
	le.PutUint32(mb[mbPost:], 7)
	le.PutUint32(mb[mbHook:], 3)
	le.PutUint64(mb[mbVA:], 0xffffffff81000000)
	le.PutUint64(mb[mbRegMask:], putRegs(mb[mbRegs:]))
	h, err := decodeMailbox(mb, 4)
	if err != nil {
		t.Fatal(err)
	}
	r := h.Regs
	if h.Seq != 7 || h.Hook != 3 || r.RAX != 0x1000 || r.RDI != 0x1005 || r.RIP != 0x1010 || r.CS.Selector != 0x1012 ||
		r.GSBase != 0x1019 || r.GS.Base != 0x1019 || r.KernelGSBase != 0x101a || r.CR3 != 0x101d || r.EFER != 0x101f {
		t.Fatalf("decoded %+v", h)
	}
	if _, err := decodeMailbox(mb, 3); err == nil {
		t.Error("hook index past the table accepted")
	}
	le.PutUint64(mb[mbRegMask:], (1<<shmRegs-1)&^(1<<29))
	if _, err := decodeMailbox(mb, 4); err == nil {
		t.Error("hit without CR3 accepted")
	}
}

func TestDecodeTable(t *testing.T) {
	b := make([]byte, 8+8*4)
	binary.LittleEndian.PutUint32(b, 2)
	binary.LittleEndian.PutUint64(b[8:], 5)
	binary.LittleEndian.PutUint64(b[16:], 6)
	if v, err := decodeTable(b, 4); err != nil || len(v) != 2 || v[1] != 6 {
		t.Fatalf("%v %v", v, err)
	}
	binary.LittleEndian.PutUint32(b, 5)
	if _, err := decodeTable(b, 4); err == nil {
		t.Error("count past the slots accepted")
	}
}

// checkSHM runs every Go-side parser over a (possibly hostile) file: none
// may panic, and what they accept must be in bounds.
func checkSHM(t *testing.T, b []byte) {
	h, err := parseSHMHeader(b)
	if err != nil {
		return
	}
	if h.Total > len(b) || h.MailboxOff+h.VCPUs*shmMailboxSize > h.Total || h.CountersOff+h.VCPUs*shmCounterSize > h.Total {
		t.Fatalf("header %+v accepted for %d bytes", h, len(b))
	}
	for v := range h.VCPUs {
		off, err := h.mailboxOff(v)
		if err != nil {
			t.Fatal(err)
		}
		if mh, err := decodeMailbox(b[off:off+shmMailboxSize], h.MaxHooks); err == nil && int(mh.Hook) >= h.MaxHooks {
			t.Fatalf("hook %d of %d accepted", mh.Hook, h.MaxHooks)
		}
		_, _, _ = decodeSample(b[off : off+shmMailboxSize])
		rb := h.RingOff + v*(shmRingHeader+h.RingEntries*shmRecordSize) + shmRingHeader
		for i := range min(h.RingEntries, 4) {
			r := rb + i*shmRecordSize
			_, _, _ = decodeRecord(b[r:r+shmRecordSize], h.MaxHooks, h.VCPUs)
		}
	}
	if _, err := h.mailboxOff(h.VCPUs); err == nil {
		t.Fatal("mailbox past the last vCPU accepted")
	}
	_, _ = decodeCounters(b[h.CountersOff:], h.VCPUs)
	if vas, err := decodeTable(b[h.TableOff:h.Total], h.MaxHooks); err == nil && len(vas) > h.MaxHooks {
		t.Fatalf("%d table entries of %d accepted", len(vas), h.MaxHooks)
	}
}

func FuzzSHMHeader(f *testing.F) {
	f.Add(makeSHM(2, 256, 0))
	f.Add(makeSHM(1, 4, 2))
	f.Add(makeSHM(2, 256, 0)[:shmHeaderSize])
	f.Add([]byte("VMIHOOK1"))
	f.Fuzz(func(t *testing.T, b []byte) { checkSHM(t, b) })
}

// FuzzSHMFields fuzzes the header fields of a valid file (sizes, counts,
// offsets) rather than raw bytes, which rarely get past the magic.
func FuzzSHMFields(f *testing.F) {
	f.Add(uint32(2), uint32(256), uint32(0), uint64(256), uint64(2368), uint64(4416), uint64(4544), uint64(8192), uint32(1))
	f.Add(uint32(1), uint32(4), uint32(2), uint64(256), uint64(320), uint64(1344), uint64(1408), uint64(4096), uint32(2))
	f.Fuzz(func(t *testing.T, vcpus, hooks, ring uint32, tab, mb, cnt, rg, total uint64, mode uint32) {
		b := makeSHM(2, 256, 0)
		b = append(b, make([]byte, 8192)...)
		le := binary.LittleEndian
		le.PutUint32(b[hdrVCPUs:], vcpus)
		le.PutUint32(b[hdrMaxHooks:], hooks)
		le.PutUint32(b[hdrRingEntries:], ring)
		le.PutUint32(b[hdrMode:], mode)
		le.PutUint64(b[hdrTableOff:], tab)
		le.PutUint64(b[hdrMailboxOff:], mb)
		le.PutUint64(b[hdrCountersOff:], cnt)
		le.PutUint64(b[hdrRingOff:], rg)
		le.PutUint64(b[hdrTotalSize:], total)
		checkSHM(t, b)
	})
}

func FuzzMailbox(f *testing.F) {
	mb := make([]byte, shmMailboxSize)
	binary.LittleEndian.PutUint64(mb[mbRegMask:], putRegs(mb[mbRegs:]))
	f.Add(mb, 4)
	f.Add(mb[:100], 1)
	f.Fuzz(func(t *testing.T, b []byte, maxHooks int) {
		h, err := decodeMailbox(b, maxHooks)
		if err == nil && (int(h.Hook) >= maxHooks || len(b) < shmMailboxSize) {
			t.Fatalf("accepted hook %d of %d from %d bytes", h.Hook, maxHooks, len(b))
		}
		_, _, _ = decodeSample(b)
		_, _, _ = decodeRecord(b, maxHooks, 2)
	})
}

func FuzzTable(f *testing.F) {
	b := make([]byte, 8+8*4)
	binary.LittleEndian.PutUint32(b, 2)
	f.Add(b, 4)
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, 1)
	f.Fuzz(func(t *testing.T, b []byte, maxHooks int) {
		vas, err := decodeTable(b, maxHooks)
		if err == nil && (len(vas) > maxHooks || 8+8*len(vas) > len(b)) {
			t.Fatalf("%d entries accepted from %d bytes, %d slots", len(vas), len(b), maxHooks)
		}
		_, _ = decodeCounters(b, maxHooks%300)
	})
}

// fakePlugin is the plugin's side of the protocol over a synthetic file:
// tests drive PluginDriver through it without QEMU.
type fakePlugin struct {
	t   *testing.T
	b   []byte // the driver's mapping of the same file
	off int    // vCPU 0's mailbox
}

func (p *fakePlugin) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&p.b[off])) }

func (p *fakePlugin) post(seq uint32, hook uint32, va uint64) {
	le := binary.LittleEndian
	mb := p.b[p.off:]
	le.PutUint32(mb[mbHook:], hook)
	le.PutUint64(mb[mbVA:], va)
	le.PutUint64(mb[mbTime:], monotonicNS())
	le.PutUint64(mb[mbRegMask:], putRegs(mb[mbRegs:]))
	atomic.StoreUint32(p.u32(p.off+mbPost), seq)
	atomic.AddUint32(p.u32(hdrDoorbell), 1)
	futexWake(p.u32(hdrDoorbell))
}

func openFake(t *testing.T, file []byte) (*PluginDriver, *fakePlugin) {
	dir := t.TempDir()
	shm, ramPath := filepath.Join(dir, "hooks"), filepath.Join(dir, "ram")
	if err := os.WriteFile(shm, file, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ramPath, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := OpenPlugin(context.Background(), PluginConfig{SHMPath: shm, RAMPath: ramPath, OpenTimeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	off, _ := d.hdr.mailboxOff(0)
	return d, &fakePlugin{t: t, b: d.shm, off: off}
}

// TestPluginProtocol: a posted hit becomes an event with the hooked
// address as RIP, its release is the ack the plugin waits for, and a hit
// the plugin abandoned is not delivered.
func TestPluginProtocol(t *testing.T) {
	d, p := openFake(t, makeSHM(2, 16, 0))
	if got := atomic.LoadUint32(p.u32(hdrAttached)); got != 1 {
		t.Fatalf("attached = %d", got)
	}
	if err := d.SetHooks([]introspect.Va{0x30, 0x10, 0x30}); err != nil {
		t.Fatal(err)
	}
	if vas, _ := decodeTable(d.shm[d.hdr.TableOff:], d.hdr.MaxHooks); len(vas) != 2 || vas[0] != 0x10 {
		t.Fatalf("table %v, want sorted and unique", vas)
	}
	if gen := atomic.LoadUint32(p.u32(hdrTableGen)); gen&1 != 0 || gen == 0 {
		t.Fatalf("table generation %d after a write", gen)
	}
	if err := d.SetHooks(make([]introspect.Va, 17)); err == nil {
		t.Error("more hooks than slots accepted")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.post(1, 0, 0x10)
	ev, err := d.WaitHit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev.VCPU != 0 || ev.Seq != 1 || ev.Regs.RIP != 0x10 || ev.Regs.CR3 != 0x101d {
		t.Fatalf("event %+v", ev)
	}
	if r, err := d.Registers(0); err != nil || r.RDI != 0x1005 {
		t.Fatalf("registers of the held vCPU: %+v %v", r, err)
	}
	held, err := d.ReleaseHit(ev)
	if err != nil || !held {
		t.Fatalf("release: held %v err %v", held, err)
	}
	if ack := atomic.LoadUint32(p.u32(p.off + mbAck)); ack != 1 {
		t.Fatalf("ack = %d, want 1", ack)
	}

	// Abandoned (deadline passed) before the driver read it: dropped.
	atomic.StoreUint32(p.u32(p.off+mbAbandoned), 2)
	p.post(2, 0, 0x10)
	sctx, scancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer scancel()
	if ev, err := d.WaitHit(sctx); err == nil {
		t.Fatalf("abandoned hit delivered: %+v", ev)
	}
	if d.Torn() != 1 {
		t.Errorf("torn = %d, want 1", d.Torn())
	}
	// A corrupt hit (hook index past the table) is released, not
	// delivered, by the WaitHit that finds it.
	p.post(3, 99, 0x10)
	sctx2, scancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer scancel2()
	if ev, err := d.WaitHit(sctx2); err == nil {
		t.Fatalf("corrupt hit delivered: %+v", ev)
	}
	if ack := atomic.LoadUint32(p.u32(p.off + mbAck)); ack != 3 {
		t.Fatalf("corrupt hit not released: ack %d", ack)
	}

	// A hit on vCPU 1 rings the same doorbell; a WaitHit asleep on it
	// wakes and finds it in the other mailbox.
	got := make(chan *driver.Event, 1)
	go func() {
		ev, _ := d.WaitHit(ctx)
		got <- ev
	}()
	time.Sleep(20 * time.Millisecond)
	p1 := &fakePlugin{t: t, b: p.b, off: p.off + shmMailboxSize}
	p1.post(1, 1, 0x30)
	if ev := <-got; ev == nil || ev.VCPU != 1 || ev.Regs.RIP != 0x30 {
		t.Fatalf("vCPU 1 hit: %+v", ev)
	}
	if _, err := d.ReleaseHit(&driver.Event{VCPU: 1, Seq: 1}); err != nil {
		t.Fatal(err)
	}

	// A cancelled context ends a WaitHit asleep on the doorbell.
	cctx, ccancel := context.WithCancel(context.Background())
	go func() { time.Sleep(20 * time.Millisecond); ccancel() }()
	if _, err := d.WaitHit(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitHit after cancel: %v", err)
	}

	// A second exporter is refused while this one's heartbeat is fresh.
	if _, err := OpenPlugin(context.Background(), PluginConfig{SHMPath: d.cfg.SHMPath, RAMPath: d.cfg.RAMPath}, nil); err == nil {
		t.Fatal("second exporter attached")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(d.cfg.SHMPath)
	if binary.LittleEndian.Uint32(b[hdrAttached:]) != 0 || binary.LittleEndian.Uint32(b[d.hdr.TableOff:]) != 0 {
		t.Fatal("Close left the exporter attached or hooks in the table")
	}
}

// TestPluginSample: Registers of a vCPU without a held hit asks the plugin
// for a sample and returns it.
func TestPluginSample(t *testing.T) {
	d, p := openFake(t, makeSHM(1, 4, 0))
	go func() {
		for atomic.LoadUint32(p.u32(hdrSampleReq)) == 0 {
			time.Sleep(time.Millisecond)
		}
		mb := p.b[p.off:]
		binary.LittleEndian.PutUint64(mb[mbSampleMask:], putRegs(mb[mbSampleRegs:]))
		atomic.StoreUint32(p.u32(p.off+mbSampleSeq), atomic.LoadUint32(p.u32(hdrSampleReq)))
		futexWake(p.u32(p.off + mbSampleSeq))
	}()
	r, err := d.Registers(0)
	if err != nil || r.CR3 != 0x101d {
		t.Fatalf("sample %+v %v", r, err)
	}
	if _, err := d.Registers(1); err == nil {
		t.Fatal("registers of a vCPU the plugin has no mailbox for")
	}
}

// TestPluginGone: while a plugin holds its shared lock on the file, the
// driver waits for hits; once the lock is released (QEMU exited, however)
// WaitHit and Alive fail with driver.ErrGone, and a file whose QEMU is
// gone is not attached to at all.
func TestPluginGone(t *testing.T) {
	dir := t.TempDir()
	shm, ramPath := filepath.Join(dir, "hooks"), filepath.Join(dir, "ram")
	file := makeSHM(1, 4, 0)
	binary.LittleEndian.PutUint32(file[hdrLocked:], 1)
	if err := os.WriteFile(shm, file, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ramPath, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := PluginConfig{SHMPath: shm, RAMPath: ramPath, OpenTimeout: 300 * time.Millisecond}
	if _, err := OpenPlugin(context.Background(), cfg, nil); !errors.Is(err, driver.ErrGone) {
		t.Fatalf("open with no QEMU holding the file: %v, want ErrGone", err)
	}

	qemuFile, err := os.Open(shm) // the plugin's fd, as QEMU holds it
	if err != nil {
		t.Fatal(err)
	}
	defer qemuFile.Close()
	if err := unix.Flock(int(qemuFile.Fd()), unix.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	d, err := OpenPlugin(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*goneProbeInterval)
	if _, err := d.WaitHit(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitHit while QEMU runs: %v, want the context's deadline", err)
	}
	cancel()
	if err := d.Alive(); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("Alive while QEMU runs, without QMP: %v, want ErrUnsupported", err)
	}

	qemuFile.Close() // QEMU exits: the kernel drops its lock
	ctx, cancel = context.WithTimeout(context.Background(), 10*goneProbeInterval)
	defer cancel()
	if _, err := d.WaitHit(ctx); !errors.Is(err, driver.ErrGone) {
		t.Fatalf("WaitHit after QEMU exited: %v, want ErrGone", err)
	}
	if err := d.Alive(); !errors.Is(err, driver.ErrGone) {
		t.Errorf("Alive after QEMU exited: %v, want ErrGone", err)
	}
}
