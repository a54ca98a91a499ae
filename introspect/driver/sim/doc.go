// Package sim is a software model of a hypervisor with alternate EPT views
// (the semantics of Xen altp2m + vm_event) and of a scripted x86-64 guest,
// for tests and benchmarks of the introspection library. It implements
// driver.Driver and the capabilities PhysWriter, RegisterWriter, Pauser,
// Views, FrameAllocator, Injector and EventSource.
//
// It is not an x86 emulator. The guest is a script interpreter: each vCPU
// runs a list of Ops, and one op is one "instruction" as far as events,
// single-steps and retries are concerned. What the model reproduces
// faithfully is what matters to a view-based breakpoint engine:
//
// # Memory
//
// Guest RAM is Config.Frames frames of 4 KiB starting at gfn 0. Frames made
// with AllocateFrame (shadow frames) are numbered above guest RAM; the guest
// never maps them by itself. ReadPhysical and WritePhysical access the
// default view, i.e. frames by their own number, as a foreign mapping does.
//
// # Views
//
// View 0 is the default view: every frame maps to itself with RWX, and it
// cannot be changed. CreateView makes a view where every frame maps to
// itself with the given default access. ChangeGFN(v, from, to) makes frame
// from resolve to the memory of frame to in view v and, as in Xen, gives
// from the access that to has in v at that moment (so a caller that wants a
// remap to be execute-only from the first instant sets to's access first).
// ChangeGFN(v, g, g) removes the remap and keeps the access. SetAccess and
// GetAccess act on a frame's entry in a view. FreeFrame refuses a frame that
// a view still maps, which catches teardown-order bugs.
//
// # vCPUs and the guest
//
// Each vCPU has amd64.Registers, a current view and a script. Addresses are
// translated by walking the guest's own 4- or 5-level page tables (CR3, CR4
// LA57) in guest memory, through the vCPU's current view:
//
//   - reading a table entry needs R on the table's frame in the view;
//   - setting an Accessed bit (and Dirty on the leaf for a write) that is
//     clear is a write to the table frame and needs W, as with EPT; the
//     resulting event has Access W, the entry's GPA and the VA walked, with
//     RIP at the instruction being executed (for a call, the function);
//   - a not-present entry is a guest page fault: the guest's handler pages
//     the entry back in (an OpPageIn inserted before the retried op) and the
//     op is retried; an entry that was never mapped ends the op as a script
//     error (recorded);
//   - the final frame needs X for a call, R for a read, W for a write.
//
// A missing right stops the vCPU with a ReasonMemoryAccess event and the
// op is not executed (fault semantics: it is retried when the vCPU resumes).
// NX, U/S and R/W bits of guest entries are not enforced.
//
// Ops (see Op): OpCall fetches the byte at VA through the view; 0xCC raises
// #BP, reported as a ReasonInterrupt event (vector 3, length 1, RIP = VA)
// when the breakpoint monitor is on and otherwise delivered to the guest and
// recorded; any other byte completes the call (recorded). A guest INT3 of its
// own is simply an OpCall at an address whose byte the guest set to 0xCC.
// OpRead and OpWrite access data within one page and record what the guest
// observed. OpPageOut and OpPageIn clear and set the present bit of the entry
// that maps VA at a given level (1 = PTE ... 4 = PML4E), optionally moving the
// page or table to a fresh frame; these are writes to page-table frames,
// reported with GVA 0 because a real guest writes them through a self-map
// the model does not have. OpSetCR3 switches address space.
//
// # Events and responses
//
// WaitEvent runs vCPUs one op at a time, chosen by a PRNG seeded with
// Config.Seed, until one stops; runs are reproducible for a seed. A stopped
// vCPU waits for Respond. An event is normally delivered as soon as it is
// raised; with Config.Latency > 0 other vCPUs may keep running while it waits
// in the ring, which models the real race between a vCPU's event and what
// other vCPUs do before the introspector handles it.
//
// Prompt stepping: with Latency 0, a vCPU resumed with a single-step or fast
// single-step executes that step before any other vCPU is scheduled. On
// hardware the step takes microseconds, while another vCPU's conflicting
// page-table store needs a full event round-trip through the introspector
// first. With Latency > 0 this priority is off, which exposes the
// (hardware-real, rare) race where a step faults because another vCPU paged
// its page out in between. WaitEvent returns
// ErrIdle (instead of blocking forever) when no vCPU can run: every script
// finished, or the guest is paused.
//
// Respond applies, in order: Registers; SetView; FastSingleStep (execute the
// next step in the (new) view, then silently return to the view the vCPU was
// in when the event was raised; a fast step interrupted by another event
// keeps its return view); ToggleSingleStep (after the next completed step a
// ReasonSingleStep event is raised, until toggled off); ReinjectInterrupt
// (the #BP is delivered to the guest and recorded, which completes the INT3
// op). A zero Response retries the op. InjectPageFault queues a #PF that the
// guest handles at its next step (recorded; the guest pages the address in if
// it is not present) before retrying its op.
//
// Disabling a monitor drops queued events of that kind (their vCPUs retry)
// and, for single-step, clears every vCPU's single-step flag and abandons
// pending fast single-steps (the vCPU returns to their return view). A violation
// with the memory-access monitor off, or a single-step with its monitor off,
// lets the access proceed and is recorded as ObsUnmonitored, since a real
// hypervisor would crash the domain or lose the event.
//
// # Simplifications
//
// Compared with hardware: there is no TLB (every access walks the tables,
// so a page-table store takes effect at once on every vCPU); an op is one
// instruction and only its first byte is fetched; no instruction touches two
// pages; the page moved by OpPageIn comes from the guest's own memory (its
// "swap"), written through the view; guest page-table stores report GVA 0;
// NX, U/S and R/W bits of guest entries are not enforced; an injected #PF is
// handled at the vCPU's next step and its handler only pages in; there is no
// DMA and no interrupt other than #BP and #PF; exceptions never nest.
//
// # Observation and fault injection
//
// Observations lists, in order, what the guest saw: completed calls, data
// read (with whether it differs from the guest's own memory), exceptions
// received (with whether the guest's own memory holds the INT3, or the #PF
// was injected), page-ins/outs and script errors. Fail makes the n-th call of
// a named driver method fail with ErrInjected. Pristine reports anything an
// introspector left behind (views, shadow frames, monitors, vCPU state), and
// ForeignWrites counts WritePhysical calls that touched guest RAM.
//
// # Building a guest
//
// Use NewAddressSpace and AddressSpace.Map/Map2M/MapNew to lay out page
// tables (tables and frames come from the guest's frame pool, AllocGuestFrame
// and AllocGuestFrames for 2 MiB pages; intermediate tables are created on
// demand, present and writable, with Accessed clear so the first walk sets
// it), AddressSpace.Clone for a process that shares the kernel's top-level
// entries, AddressSpace.Write to fill memory (Poke for physical memory:
// neither counts as a driver call), SetRegisters for CR3, GS bases, LSTAR
// and the rest, and Script to queue ops per vCPU. A scripted call is
// sim.Call(va, set), where set fills the argument registers (and RSP for
// stack arguments) before the call executes; to make an argument page absent,
// script sim.PageOut(va, 1) before the call, or clear the present bit with
// AddressSpace.Entry and Poke while building:
//
//	m := sim.New(sim.Config{Frames: 1024, VCPUs: 2, Seed: 1})
//	as, _ := m.NewAddressSpace(paging.Level4)
//	code, _ := as.MapNew(0xffff_f800_0000_0000, 4, 0)
//	_ = as.Write(0xffff_f800_0000_0100, []byte{0x55})
//	m.SetRegisters(0, &amd64.Registers{CR3: uint64(as.Root)})
//	m.Script(0, sim.Call(0xffff_f800_0000_0100, func(r *amd64.Registers) { r.RCX = 1 }))
//
// See Example for a complete run with the view engine (hook.NewViews).
package sim
