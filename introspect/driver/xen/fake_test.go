package xen

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/vmi-exporter/vmi-exporter/introspect"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver"
	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

// fakeXen is a hypervisor for tests: guest frames in Go memory, a ring page
// played by frontEnd, and a record of every call. fail makes a named call
// return an error (every time).
type fakeXen struct {
	calls  []string
	fail   map[string]error
	nvcpus int

	frames   map[introspect.Gfn][]byte
	readOnly map[introspect.Gfn]bool
	maxGfn_  introspect.Gfn
	mapped   int // live mappings

	cpus [][]byte // hvm_hw_cpu per vCPU

	paused   int // our net pause count on the domain
	ring     []byte
	fe       *frontEnd
	monitors map[driver.Monitor]bool
	injected []string
	ssOff    []introspect.VCPU

	altp2m   bool
	views    map[introspect.View]uint32 // default access
	nextView introspect.View
	current  introspect.View
	access   map[[2]uint64]uint32 // (view, gfn) -> access
	remap    map[[2]uint64]introspect.Gfn
	closed   bool

	state domainInfo // what domainInfo reports
	gone  bool       // the domain no longer exists
}

var (
	patternPage = func() []byte {
		p := make([]byte, abi.PageSize+7)
		for i := range p {
			p[i] = byte(i*7 + i>>8)
		}
		return p
	}()
	garbagePage = bytes.Repeat([]byte{0xee}, abi.PageSize)
)

func newFakeXen(nvcpus int, frames int) *fakeXen {
	f := &fakeXen{
		fail: map[string]error{}, nvcpus: nvcpus,
		frames: map[introspect.Gfn][]byte{}, readOnly: map[introspect.Gfn]bool{},
		monitors: map[driver.Monitor]bool{}, views: map[introspect.View]uint32{}, nextView: 1,
		access: map[[2]uint64]uint32{}, remap: map[[2]uint64]introspect.Gfn{},
		state: domainInfo{hvm: true},
	}
	for g := range introspect.Gfn(frames) {
		// Distinct contents per frame, without a per-byte loop (which
		// fuzzing's coverage counters would make slow).
		p := make([]byte, abi.PageSize)
		copy(p, patternPage[g%7:])
		f.frames[g] = p
	}
	f.maxGfn_ = introspect.Gfn(frames - 1)
	for i := range nvcpus {
		rec := make([]byte, abi.HVMCPUSize)
		le.PutUint64(rec[abi.OffCPURIP:], 0x1000+uint64(i))
		le.PutUint64(rec[abi.OffCPUCR3:], 0x1aa000)
		f.cpus = append(f.cpus, rec)
	}
	return f
}

func (f *fakeXen) call(name string) error {
	f.calls = append(f.calls, name)
	if err := f.fail[name]; err != nil {
		return fmt.Errorf("fake %s: %w", name, err)
	}
	return nil
}

func (f *fakeXen) called(name string) int {
	n := 0
	for _, c := range f.calls {
		if c == name {
			n++
		}
	}
	return n
}

func (f *fakeXen) index(name string) int { return slices.Index(f.calls, name) }

func (f *fakeXen) pause() error {
	if err := f.call("pause"); err != nil {
		return err
	}
	f.paused++
	return nil
}

func (f *fakeXen) unpause() error {
	if err := f.call("unpause"); err != nil {
		return err
	}
	if f.paused == 0 {
		return errors.New("fake: unpause of a domain we did not pause")
	}
	f.paused--
	return nil
}

func (f *fakeXen) maxGfn() (introspect.Gfn, error) { return f.maxGfn_, f.call("maxGfn") }

func (f *fakeXen) mapFrame(gfn introspect.Gfn, write bool) ([]byte, error) {
	if err := f.call("mapFrame"); err != nil {
		return nil, err
	}
	p, ok := f.frames[gfn]
	if !ok {
		return nil, errors.New("fake: no such frame")
	}
	if write && f.readOnly[gfn] {
		return nil, errors.New("fake: read-only frame")
	}
	f.mapped++
	return p, nil
}

func (f *fakeXen) unmapFrame([]byte) error {
	f.mapped--
	return f.call("unmapFrame")
}

func (f *fakeXen) hvmCPU(vcpu introspect.VCPU, dst []byte) error {
	if err := f.call("hvmCPU"); err != nil {
		return err
	}
	copy(dst, f.cpus[vcpu])
	return nil
}

func (f *fakeXen) hvmContext(limit int) ([]byte, error) {
	if err := f.call("hvmContext"); err != nil {
		return nil, err
	}
	var ctx []byte
	ctx = append(ctx, saveRecord(1, 0, make([]byte, 24))...)
	for i, rec := range f.cpus {
		ctx = append(ctx, saveRecord(abi.HVMSaveCodeCPU, uint16(i), rec)...)
	}
	ctx = append(ctx, saveRecord(abi.HVMSaveCodeEnd, 0, nil)...)
	if len(ctx) > limit {
		return nil, errors.New("fake: context too large")
	}
	return ctx, nil
}

func (f *fakeXen) setHVMContext(ctx []byte) error {
	if err := f.call("setHVMContext"); err != nil {
		return err
	}
	for i := range f.cpus {
		rec, err := FindSaveRecord(ctx, abi.HVMSaveCodeCPU, uint16(i))
		if err != nil {
			return err
		}
		copy(f.cpus[i], rec)
	}
	return nil
}

func (f *fakeXen) monitorEnable() ([]byte, error) {
	if err := f.call("monitorEnable"); err != nil {
		return nil, err
	}
	if f.ring != nil {
		return nil, errors.New("fake: EBUSY")
	}
	f.ring = make([]byte, abi.PageSize)
	copy(f.ring, garbagePage) // SHARED_RING_INIT must set up the header
	f.fe = &frontEnd{page: f.ring}
	return f.ring, nil
}

func (f *fakeXen) monitorDisable() error {
	f.ring = nil
	return f.call("monitorDisable")
}

func (f *fakeXen) forceMonitorDisable() error {
	if err := f.call("forceMonitorDisable"); err != nil {
		return err
	}
	f.ring, f.fe = nil, nil
	clear(f.monitors)
	return nil
}

func (f *fakeXen) setMonitor(m driver.Monitor, on bool) error {
	if err := f.call(fmt.Sprintf("setMonitor(%d,%v)", m, on)); err != nil {
		return err
	}
	f.monitors[m] = on
	return nil
}

func (f *fakeXen) wait(int) error {
	time.Sleep(time.Millisecond)
	return f.call("wait")
}

func (f *fakeXen) notify() error { return f.call("notify") }

func (f *fakeXen) domainInfo() (domainInfo, error) {
	if err := f.call("domainInfo"); err != nil {
		return domainInfo{}, err
	}
	if f.gone {
		return domainInfo{}, fmt.Errorf("%w: id 7", ErrNoDomain)
	}
	return f.state, nil
}

func (f *fakeXen) injectEvent(vcpu introspect.VCPU, vector, typ uint8, ec uint32, n uint8, cr2 uint64) error {
	if err := f.call("injectEvent"); err != nil {
		return err
	}
	f.injected = append(f.injected, fmt.Sprintf("vcpu=%d vec=%d type=%d ec=%#x len=%d cr2=%#x", vcpu, vector, typ, ec, n, cr2))
	return nil
}

func (f *fakeXen) altp2mState() (bool, error) { return f.altp2m, f.call("altp2mState") }

func (f *fakeXen) setAltp2mState(on bool) error {
	if err := f.call(fmt.Sprintf("setAltp2mState(%v)", on)); err != nil {
		return err
	}
	f.altp2m = on
	if !on {
		clear(f.views)
		f.current = 0
	}
	return nil
}

func (f *fakeXen) createView(acc uint32) (introspect.View, error) {
	if err := f.call("createView"); err != nil {
		return 0, err
	}
	v := f.nextView
	f.nextView++
	f.views[v] = acc
	return v, nil
}

func (f *fakeXen) destroyView(v introspect.View) error {
	if err := f.call("destroyView"); err != nil {
		return err
	}
	if f.current == v {
		return errors.New("fake: EBUSY")
	}
	delete(f.views, v)
	return nil
}

func (f *fakeXen) switchView(v introspect.View) error {
	if err := f.call("switchView"); err != nil {
		return err
	}
	f.current = v
	return nil
}

func (f *fakeXen) changeGFN(v introspect.View, from, to introspect.Gfn) error {
	if err := f.call("changeGFN"); err != nil {
		return err
	}
	if to == invalidGfn {
		delete(f.remap, [2]uint64{uint64(v), uint64(from)})
	} else {
		f.remap[[2]uint64{uint64(v), uint64(from)}] = to
	}
	return nil
}

func (f *fakeXen) setAccess(v introspect.View, gfn introspect.Gfn, acc uint32) error {
	if err := f.call("setAccess"); err != nil {
		return err
	}
	f.access[[2]uint64{uint64(v), uint64(gfn)}] = acc
	return nil
}

func (f *fakeXen) getAccess(v introspect.View, gfn introspect.Gfn) (uint32, error) {
	if err := f.call("getAccess"); err != nil {
		return 0, err
	}
	if a, ok := f.access[[2]uint64{uint64(v), uint64(gfn)}]; ok {
		return a, nil
	}
	if v == 0 {
		return xenmemAccessRWX, nil
	}
	return f.views[v], nil
}

func (f *fakeXen) populate(gfn introspect.Gfn) error {
	if err := f.call("populate"); err != nil {
		return err
	}
	if _, ok := f.frames[gfn]; ok {
		return errors.New("fake: frame exists")
	}
	f.frames[gfn] = make([]byte, abi.PageSize)
	f.maxGfn_ = max(f.maxGfn_, gfn)
	return nil
}

func (f *fakeXen) decrease(gfn introspect.Gfn) error {
	if err := f.call("decrease"); err != nil {
		return err
	}
	delete(f.frames, gfn)
	return nil
}

func (f *fakeXen) singleStepOff(v introspect.VCPU) error {
	if err := f.call("singleStepOff"); err != nil {
		return err
	}
	f.ssOff = append(f.ssOff, v)
	return nil
}

func (f *fakeXen) close() error {
	f.closed = true
	return f.call("close")
}
