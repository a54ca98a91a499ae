package qemu

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect/arch/amd64"
)

// The layout of the vmi-hooks plugin's shared file, version 2; see
// plugin/README.md and plugin/vmi-hooks.c, which must agree on every
// offset. The file is written by a process the guest's code runs in, so
// everything read from it is checked here before it is used: these
// functions take byte slices, bound every count and offset, and return
// errors, never panic (FuzzSHMHeader and the other fuzz tests hold them to
// it).
const (
	shmMagic       = 0x314b4f4f48494d56 // "VMIHOOK1" little-endian
	shmVersion     = 2                  // 2: the doorbell
	shmHeaderSize  = 256
	shmMailboxSize = 1024
	shmCounterSize = 64
	shmRecordSize  = 320
	shmRingHeader  = 64
	shmRegs        = 32
	shmMaxVCPUs    = 256
	shmMaxHooks    = 65536
	shmMaxRing     = 1 << 20
	shmMaxSize     = 1 << 32

	shmModeHeld  = 1
	shmModeAsync = 2
)

// Header field offsets.
const (
	hdrMagic            = 0
	hdrVersion          = 8
	hdrHeaderSize       = 12
	hdrVCPUs            = 16
	hdrMode             = 20
	hdrHoldUS           = 24
	hdrMaxHooks         = 28
	hdrMailboxSize      = 32
	hdrRingEntries      = 36
	hdrTableOff         = 40
	hdrMailboxOff       = 48
	hdrCountersOff      = 56
	hdrRingOff          = 64
	hdrTotalSize        = 72
	hdrPluginPID        = 80
	hdrAttached         = 84
	hdrHeartbeat        = 88
	hdrTableGen         = 96
	hdrAppliedGen       = 100
	hdrAppliedNS        = 104
	hdrRegMask          = 112
	hdrAppliedHooks     = 120
	hdrResets           = 124
	hdrHeartbeatTimeout = 128
	hdrAppliedAlive     = 136
	hdrSampleReq        = 140
	hdrLocked           = 144
	hdrDoorbell         = 148 // plugin: bumped (and futex-woken) at every held post
)

// Mailbox field offsets, from the start of a vCPU's mailbox.
const (
	mbPost       = 0
	mbAck        = 4
	mbAbandoned  = 8
	mbHook       = 12
	mbVA         = 16
	mbTime       = 24
	mbRegMask    = 32
	mbRegs       = 40
	mbSampleSeq  = 512
	mbSampleTime = 520
	mbSampleMask = 528
	mbSampleRegs = 536
)

// shmHeader is the validated header: every region it names lies inside
// the file and does not overlap the header.
type shmHeader struct {
	VCPUs        int
	Mode         uint32
	HoldUS       uint32
	MaxHooks     int
	RingEntries  int
	TableOff     int
	MailboxOff   int
	CountersOff  int
	RingOff      int
	Total        int
	PluginPID    uint32
	HBTimeoutNS  uint64
	RegMaskFound uint64
}

var errSHMShort = errors.New("vmi-hooks shared file too short")

// parseSHMHeader checks b, the whole shared file, and returns its layout.
func parseSHMHeader(b []byte) (shmHeader, error) {
	var h shmHeader
	if len(b) < shmHeaderSize {
		return h, fmt.Errorf("%w: %d bytes", errSHMShort, len(b))
	}
	le := binary.LittleEndian
	if m := le.Uint64(b[hdrMagic:]); m != shmMagic {
		return h, fmt.Errorf("vmi-hooks shared file: magic %#x, want %#x (not written by the plugin yet?)", m, uint64(shmMagic))
	}
	if v := le.Uint32(b[hdrVersion:]); v != shmVersion {
		return h, fmt.Errorf("vmi-hooks shared file: layout version %d, this exporter knows %d", v, shmVersion)
	}
	if hs := le.Uint32(b[hdrHeaderSize:]); hs != shmHeaderSize {
		return h, fmt.Errorf("vmi-hooks shared file: header size %d, want %d", hs, shmHeaderSize)
	}
	if ms := le.Uint32(b[hdrMailboxSize:]); ms != shmMailboxSize {
		return h, fmt.Errorf("vmi-hooks shared file: mailbox size %d, want %d", ms, shmMailboxSize)
	}
	vcpus := le.Uint32(b[hdrVCPUs:])
	if vcpus == 0 || vcpus > shmMaxVCPUs {
		return h, fmt.Errorf("vmi-hooks shared file: %d vCPUs", vcpus)
	}
	mode := le.Uint32(b[hdrMode:])
	if mode != shmModeHeld && mode != shmModeAsync {
		return h, fmt.Errorf("vmi-hooks shared file: mode %d", mode)
	}
	maxHooks := le.Uint32(b[hdrMaxHooks:])
	if maxHooks == 0 || maxHooks > shmMaxHooks {
		return h, fmt.Errorf("vmi-hooks shared file: %d hook slots", maxHooks)
	}
	ring := le.Uint32(b[hdrRingEntries:])
	if ring > shmMaxRing || (mode == shmModeAsync) != (ring > 0) {
		return h, fmt.Errorf("vmi-hooks shared file: %d ring entries in mode %d", ring, mode)
	}
	total := le.Uint64(b[hdrTotalSize:])
	if total > shmMaxSize || total > uint64(len(b)) {
		return h, fmt.Errorf("vmi-hooks shared file: total size %d, file has %d bytes", total, len(b))
	}
	// region checks that [off, off+size) lies in the file after the header.
	region := func(name string, off, size uint64) (int, error) {
		if off < shmHeaderSize || off%8 != 0 || off > total || size > total-off {
			return 0, fmt.Errorf("vmi-hooks shared file: %s at %d+%d outside %d bytes", name, off, size, total)
		}
		return int(off), nil
	}
	var err error
	n := uint64(vcpus)
	if h.TableOff, err = region("hook table", le.Uint64(b[hdrTableOff:]), 8+8*uint64(maxHooks)); err != nil {
		return h, err
	}
	if h.MailboxOff, err = region("mailboxes", le.Uint64(b[hdrMailboxOff:]), n*shmMailboxSize); err != nil {
		return h, err
	}
	if h.CountersOff, err = region("counters", le.Uint64(b[hdrCountersOff:]), n*shmCounterSize); err != nil {
		return h, err
	}
	if h.RingOff, err = region("rings", le.Uint64(b[hdrRingOff:]), n*(shmRingHeader+uint64(ring)*shmRecordSize)); err != nil {
		return h, err
	}
	h.VCPUs, h.Mode, h.MaxHooks, h.RingEntries, h.Total = int(vcpus), mode, int(maxHooks), int(ring), int(total)
	h.HoldUS = le.Uint32(b[hdrHoldUS:])
	h.PluginPID = le.Uint32(b[hdrPluginPID:])
	h.HBTimeoutNS = le.Uint64(b[hdrHeartbeatTimeout:])
	h.RegMaskFound = le.Uint64(b[hdrRegMask:])
	return h, nil
}

// mailboxOff returns where vCPU v's mailbox starts, or an error for a
// vCPU the header has none for.
func (h *shmHeader) mailboxOff(v int) (int, error) {
	if v < 0 || v >= h.VCPUs {
		return 0, fmt.Errorf("vCPU %d: the plugin has %d mailboxes", v, h.VCPUs)
	}
	return h.MailboxOff + v*shmMailboxSize, nil
}

// shmHit is a hit as a mailbox or a ring record holds it.
type shmHit struct {
	Seq    uint64
	Hook   uint32
	VA     uint64
	TimeNS uint64
	Regs   amd64.Registers
}

// regSlots ties the plugin's register slots (reg_names in vmi-hooks.c) to
// amd64.Registers. The segment registers give only their selector.
var regSlots = [shmRegs]func(r *amd64.Registers, v uint64){
	func(r *amd64.Registers, v uint64) { r.RAX = v },
	func(r *amd64.Registers, v uint64) { r.RBX = v },
	func(r *amd64.Registers, v uint64) { r.RCX = v },
	func(r *amd64.Registers, v uint64) { r.RDX = v },
	func(r *amd64.Registers, v uint64) { r.RSI = v },
	func(r *amd64.Registers, v uint64) { r.RDI = v },
	func(r *amd64.Registers, v uint64) { r.RBP = v },
	func(r *amd64.Registers, v uint64) { r.RSP = v },
	func(r *amd64.Registers, v uint64) { r.R8 = v },
	func(r *amd64.Registers, v uint64) { r.R9 = v },
	func(r *amd64.Registers, v uint64) { r.R10 = v },
	func(r *amd64.Registers, v uint64) { r.R11 = v },
	func(r *amd64.Registers, v uint64) { r.R12 = v },
	func(r *amd64.Registers, v uint64) { r.R13 = v },
	func(r *amd64.Registers, v uint64) { r.R14 = v },
	func(r *amd64.Registers, v uint64) { r.R15 = v },
	func(r *amd64.Registers, v uint64) { r.RIP = v },
	func(r *amd64.Registers, v uint64) { r.RFLAGS = v },
	func(r *amd64.Registers, v uint64) { r.CS.Selector = uint16(v) },
	func(r *amd64.Registers, v uint64) { r.SS.Selector = uint16(v) },
	func(r *amd64.Registers, v uint64) { r.DS.Selector = uint16(v) },
	func(r *amd64.Registers, v uint64) { r.ES.Selector = uint16(v) },
	func(r *amd64.Registers, v uint64) { r.FS.Selector = uint16(v) },
	func(r *amd64.Registers, v uint64) { r.GS.Selector = uint16(v) },
	func(r *amd64.Registers, v uint64) { r.FSBase, r.FS.Base = v, v },
	func(r *amd64.Registers, v uint64) { r.GSBase, r.GS.Base = v, v },
	func(r *amd64.Registers, v uint64) { r.KernelGSBase = v },
	func(r *amd64.Registers, v uint64) { r.CR0 = v },
	func(r *amd64.Registers, v uint64) { r.CR2 = v },
	func(r *amd64.Registers, v uint64) { r.CR3 = v },
	func(r *amd64.Registers, v uint64) { r.CR4 = v },
	func(r *amd64.Registers, v uint64) { r.EFER = v },
}

// regsNeeded are the slots without which a hit cannot be decoded: RIP,
// RSP, CR3 and the argument registers of both calling conventions.
const regsNeeded = 1<<0 | 1<<1 | 1<<2 | 1<<3 | 1<<4 | 1<<5 | 1<<7 | 1<<8 | 1<<9 | 1<<16 | 1<<29

var regSlotNames = [shmRegs]string{
	"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
	"rip", "eflags", "cs", "ss", "ds", "es", "fs", "gs",
	"fs_base", "gs_base", "k_gs_base", "cr0", "cr2", "cr3", "cr4", "efer",
}

// decodeRegs fills r from a mask and the 32 register slots at b.
func decodeRegs(b []byte, mask uint64, r *amd64.Registers) error {
	if len(b) < 8*shmRegs {
		return errSHMShort
	}
	if mask&regsNeeded != regsNeeded {
		return fmt.Errorf("vmi-hooks: registers %s missing", missingRegs(mask))
	}
	*r = amd64.Registers{}
	for i, set := range regSlots {
		if mask&(1<<i) != 0 {
			set(r, binary.LittleEndian.Uint64(b[8*i:]))
		}
	}
	return nil
}

func missingRegs(mask uint64) string {
	s := ""
	for i, n := range regSlotNames {
		if regsNeeded&(1<<i) != 0 && mask&(1<<i) == 0 {
			if s != "" {
				s += ","
			}
			s += n
		}
	}
	return s
}

// decodeMailbox reads the hit posted in a mailbox (b is the mailbox, at
// least shmMailboxSize bytes). The caller checks post again afterwards:
// a vCPU whose hold timed out may overwrite the mailbox meanwhile.
func decodeMailbox(b []byte, maxHooks int) (shmHit, error) {
	var h shmHit
	if len(b) < shmMailboxSize {
		return h, errSHMShort
	}
	le := binary.LittleEndian
	h.Seq = uint64(le.Uint32(b[mbPost:]))
	h.Hook = le.Uint32(b[mbHook:])
	if int(h.Hook) >= maxHooks {
		return h, fmt.Errorf("vmi-hooks mailbox: hook index %d of %d", h.Hook, maxHooks)
	}
	h.VA = le.Uint64(b[mbVA:])
	h.TimeNS = le.Uint64(b[mbTime:])
	if err := decodeRegs(b[mbRegs:], le.Uint64(b[mbRegMask:]), &h.Regs); err != nil {
		return h, err
	}
	return h, nil
}

// decodeSample reads the register sample of a mailbox.
func decodeSample(b []byte) (seq uint32, r amd64.Registers, err error) {
	if len(b) < shmMailboxSize {
		return 0, r, errSHMShort
	}
	le := binary.LittleEndian
	seq = le.Uint32(b[mbSampleSeq:])
	err = decodeRegs(b[mbSampleRegs:], le.Uint64(b[mbSampleMask:]), &r)
	return seq, r, err
}

// decodeRecord reads one async ring record.
func decodeRecord(b []byte, maxHooks, vcpus int) (shmHit, int, error) {
	var h shmHit
	if len(b) < shmRecordSize {
		return h, 0, errSHMShort
	}
	le := binary.LittleEndian
	h.Seq = le.Uint64(b[0:])
	h.Hook = le.Uint32(b[8:])
	vcpu := le.Uint32(b[12:])
	if int(h.Hook) >= maxHooks || int(vcpu) >= vcpus {
		return h, 0, fmt.Errorf("vmi-hooks record: hook %d of %d, vCPU %d of %d", h.Hook, maxHooks, vcpu, vcpus)
	}
	h.VA = le.Uint64(b[16:])
	h.TimeNS = le.Uint64(b[24:])
	if err := decodeRegs(b[40:], le.Uint64(b[32:]), &h.Regs); err != nil {
		return h, 0, err
	}
	return h, int(vcpu), nil
}

// decodeTable reads the hook table at b (count, then addresses); it is
// the exporter's own writing, but a previous exporter's or a corrupted one
// is possible, so it is bounded like the rest.
func decodeTable(b []byte, maxHooks int) ([]uint64, error) {
	if len(b) < 8 {
		return nil, errSHMShort
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n > maxHooks || 8+8*n > len(b) {
		return nil, fmt.Errorf("vmi-hooks table: %d entries, room for %d", n, min(maxHooks, (len(b)-8)/8))
	}
	vas := make([]uint64, n)
	for i := range vas {
		vas[i] = binary.LittleEndian.Uint64(b[8+8*i:])
	}
	return vas, nil
}

// PluginCounters are the plugin's counters summed over vCPUs.
type PluginCounters struct {
	Hits             uint64 // executions of a hooked address
	Held             uint64 // hits held and released before the deadline
	MissedDeadline   uint64 // hits whose hold passed the deadline
	MissedNoConsumer uint64 // hits not held: no live exporter
	RingPosted       uint64 // async hits queued
	RingOverflow     uint64 // async hits dropped, ring full
	RegErrors        uint64 // register reads that failed
}

// decodeCounters sums vcpus counter rows at b.
func decodeCounters(b []byte, vcpus int) (PluginCounters, error) {
	var c PluginCounters
	if vcpus < 0 || len(b) < vcpus*shmCounterSize {
		return c, errSHMShort
	}
	le := binary.LittleEndian
	for v := range vcpus {
		row := b[v*shmCounterSize:]
		c.Hits += le.Uint64(row[0:])
		c.Held += le.Uint64(row[8:])
		c.MissedDeadline += le.Uint64(row[16:])
		c.MissedNoConsumer += le.Uint64(row[24:])
		c.RingPosted += le.Uint64(row[32:])
		c.RingOverflow += le.Uint64(row[40:])
		c.RegErrors += le.Uint64(row[48:])
	}
	return c, nil
}
