package xen

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/vmi-exporter/vmi-exporter/introspect/driver/xen/internal/abi"
)

// ErrRingCorrupt is returned (wrapped) when the shared ring's indexes are
// impossible: more requests claimed than the ring holds.
var ErrRingCorrupt = errors.New("vm_event ring indexes corrupt")

// ErrRingNoSlot is returned (wrapped) by PutResponse when every consumed
// request was already answered: one response per request is the protocol.
var ErrRingNoSlot = errors.New("vm_event ring: no consumed request left to answer")

// BackRing is our end (the back end, in ring.h terms) of the vm_event ring:
// Xen produces requests into the shared page and we produce responses.
// It mirrors BACK_RING_* from xen/io/ring.h for one 4 KiB page.
//
// The shared indexes are read and written with atomic operations, which on
// x86-64 give the ordering of xen_rmb/xen_wmb/xen_mb. Entries are copied
// out of the page before they are decoded, so the other end cannot change a
// request while it is being checked (RING_COPY_REQUEST).
//
// A BackRing is not safe for concurrent use.
type BackRing struct {
	page       []byte
	reqCons    uint32 // next request to consume
	rspProdPvt uint32 // next response slot
}

// NewBackRing attaches to a ring page of abi.PageSize bytes (aligned to 4
// bytes) at index 0, as BACK_RING_INIT does. It does not change the page;
// call InitShared on a ring that Xen has just set up.
func NewBackRing(page []byte) (*BackRing, error) {
	if len(page) < abi.PageSize {
		return nil, fmt.Errorf("vm_event ring page is %d bytes, want %d", len(page), abi.PageSize)
	}
	if uintptr(unsafe.Pointer(&page[0]))%4 != 0 {
		return nil, errors.New("vm_event ring page is not 4-byte aligned")
	}
	return &BackRing{page: page[:abi.PageSize]}, nil
}

// InitShared resets the shared header as SHARED_RING_INIT does: producers
// at 0, event thresholds at 1, private padding cleared. Xen's xen-access
// does this right after xc_monitor_enable.
func (r *BackRing) InitShared() {
	r.store(abi.OffReqProd, 0)
	r.store(abi.OffRspProd, 0)
	r.store(abi.OffReqEvent, 1)
	r.store(abi.OffRspEvent, 1)
	clear(r.page[abi.OffPvt:abi.RingHdrSize])
	r.reqCons, r.rspProdPvt = 0, 0
}

func (r *BackRing) word(off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.page[off]))
}

func (r *BackRing) load(off int) uint32     { return atomic.LoadUint32(r.word(off)) }
func (r *BackRing) store(off int, v uint32) { atomic.StoreUint32(r.word(off), v) }

// Indexes returns the private indexes (req_cons, rsp_prod_pvt).
func (r *BackRing) Indexes() (reqCons, rspProdPvt uint32) { return r.reqCons, r.rspProdPvt }

// SetIndexes sets the private indexes, as BACK_RING_ATTACH does. It is
// meant for tests and for attaching to a ring in use; the values are
// checked against each other.
func (r *BackRing) SetIndexes(reqCons, rspProdPvt uint32) error {
	if reqCons-rspProdPvt > abi.RingEntries {
		return fmt.Errorf("%w: req_cons %d is %d past rsp_prod_pvt %d", ErrRingCorrupt, reqCons, reqCons-rspProdPvt, rspProdPvt)
	}
	r.reqCons, r.rspProdPvt = reqCons, rspProdPvt
	return nil
}

// Unconsumed returns how many requests wait on the ring
// (XEN_RING_NR_UNCONSUMED_REQUESTS). A producer index that claims more
// requests than fit (RING_REQUEST_PROD_OVERFLOW) is an error.
func (r *BackRing) Unconsumed() (int, error) {
	prod := r.load(abi.OffReqProd)
	if prod-r.rspProdPvt > abi.RingEntries {
		return 0, fmt.Errorf("%w: req_prod %d, rsp_prod_pvt %d, ring of %d", ErrRingCorrupt, prod, r.rspProdPvt, abi.RingEntries)
	}
	req := prod - r.reqCons
	if req > abi.RingEntries {
		// prod is behind our consumer: it went backwards.
		return 0, fmt.Errorf("%w: req_prod %d behind req_cons %d", ErrRingCorrupt, prod, r.reqCons)
	}
	free := abi.RingEntries - (r.reqCons - r.rspProdPvt)
	return int(min(req, free)), nil
}

// Outstanding returns how many consumed requests have no response yet.
func (r *BackRing) Outstanding() int { return int(r.reqCons - r.rspProdPvt) }

func slot(idx uint32) int { return abi.RingHdrSize + int(idx&(abi.RingEntries-1))*abi.EntrySize }

// NextRequest copies the next request into dst and consumes it. It returns
// false when the ring is empty. After consuming it asks for a notification
// on the next request (req_event = req_cons + 1), as xen-access does.
func (r *BackRing) NextRequest(dst *[abi.RequestSize]byte) (bool, error) {
	n, err := r.Unconsumed()
	if err != nil || n == 0 {
		return false, err
	}
	off := slot(r.reqCons)
	copy(dst[:], r.page[off:off+abi.EntrySize])
	r.reqCons++
	r.store(abi.OffReqEvent, r.reqCons+1)
	return true, nil
}

// PutResponse writes src into the next response slot and publishes it
// (RING_PUSH_RESPONSES). It reports whether the other end asked to be
// notified (RING_PUSH_RESPONSES_AND_CHECK_NOTIFY); Xen's vm_event code
// checks the ring on every notification, so callers notify regardless.
func (r *BackRing) PutResponse(src *[abi.ResponseSize]byte) (notify bool, err error) {
	if r.reqCons == r.rspProdPvt {
		return false, ErrRingNoSlot
	}
	off := slot(r.rspProdPvt)
	copy(r.page[off:off+abi.EntrySize], src[:])
	r.rspProdPvt++
	old := r.load(abi.OffRspProd)
	r.store(abi.OffRspProd, r.rspProdPvt)
	ev := r.load(abi.OffRspEvent)
	return r.rspProdPvt-ev < r.rspProdPvt-old, nil
}

// FinalCheck reports whether requests are waiting, re-arming the request
// notification first so none is missed (RING_FINAL_CHECK_FOR_REQUESTS).
func (r *BackRing) FinalCheck() (bool, error) {
	n, err := r.Unconsumed()
	if err != nil || n > 0 {
		return n > 0, err
	}
	r.store(abi.OffReqEvent, r.reqCons+1)
	n, err = r.Unconsumed()
	return n > 0, err
}
