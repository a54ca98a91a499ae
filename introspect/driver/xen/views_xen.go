//go:build xen

package xen

/*
#include <xenctrl.h>
*/
import "C"

import (
	"errors"
	"fmt"

	"github.com/vmi-exporter/vmi-exporter/introspect"
)

// ensureAltp2m turns altp2m on for the domain if it is off, remembering to
// turn it off again in Close. The domain must have been created with
// altp2m = "external" (HVM_PARAM_ALTP2M) for this to succeed.
func (d *Driver) ensureAltp2m() error {
	if d.altp2mOn {
		return nil
	}
	var state C.bool
	if rc, err := C.xc_altp2m_get_domain_state(d.xch, d.domid, &state); rc < 0 {
		return fmt.Errorf("xen: altp2m state: %w (is the domain configured with altp2m=\"external\"?)", err)
	}
	if !state {
		if rc, err := C.xc_altp2m_set_domain_state(d.xch, d.domid, true); rc < 0 {
			return fmt.Errorf("xen: enable altp2m: %w (is the domain configured with altp2m=\"external\"?)", err)
		}
		d.altp2mByUs = true
	}
	d.altp2mOn = true
	return nil
}

func (d *Driver) ownView(v introspect.View) error {
	if v == introspect.DefaultView {
		return errors.New("xen: the default view cannot be changed this way")
	}
	if !d.views[v] {
		return fmt.Errorf("xen: view %d was not created by this driver", v)
	}
	return nil
}

func (d *Driver) checkGfn(g introspect.Gfn) error {
	if g > d.maxGfn && !d.allocated[g] {
		return fmt.Errorf("xen: %v beyond max gfn %#x", g, uint64(d.maxGfn))
	}
	return nil
}

// CreateView creates an altp2m view whose frames map to themselves with
// access def.
func (d *Driver) CreateView(def introspect.Access) (introspect.View, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return 0, err
	}
	acc, err := XenmemAccess(def)
	if err != nil {
		return 0, err
	}
	if err := d.ensureAltp2m(); err != nil {
		return 0, err
	}
	var id C.uint16_t
	if rc, err := C.xc_altp2m_create_view(d.xch, d.domid, C.xenmem_access_t(acc), &id); rc < 0 {
		return 0, fmt.Errorf("xen: create view: %w", err)
	}
	v := introspect.View(id)
	d.views[v] = true
	d.log.Debug("altp2m view created", "view", v, "access", def)
	return v, nil
}

// DestroyView destroys a view this driver created. If the domain runs in
// it, every vCPU is first switched to the default view (Xen refuses to
// destroy an active view).
func (d *Driver) DestroyView(v introspect.View) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if err := d.ownView(v); err != nil {
		return err
	}
	if d.current == v {
		if err := d.switchView(introspect.DefaultView); err != nil {
			return err
		}
	}
	if rc, err := C.xc_altp2m_destroy_view(d.xch, d.domid, C.uint16_t(v)); rc < 0 {
		return fmt.Errorf("xen: destroy view %d: %w", v, err)
	}
	delete(d.views, v)
	return nil
}

func (d *Driver) switchView(v introspect.View) error {
	if rc, err := C.xc_altp2m_switch_to_view(d.xch, d.domid, C.uint16_t(v)); rc < 0 {
		return fmt.Errorf("xen: switch to view %d: %w", v, err)
	}
	d.current = v
	return nil
}

// SwitchView moves every vCPU to view v.
func (d *Driver) SwitchView(v introspect.View) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if v != introspect.DefaultView {
		if err := d.ownView(v); err != nil {
			return err
		}
	} else if !d.altp2mOn {
		return nil // without altp2m every vCPU runs in the host p2m
	}
	return d.switchView(v)
}

// ChangeGFN maps guest frame from to the machine frame of guest frame to
// in view v. to == from removes the remapping (INVALID_GFN), after which
// Xen maps the frame to itself again with the view's default access.
func (d *Driver) ChangeGFN(v introspect.View, from, to introspect.Gfn) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	if err := d.ownView(v); err != nil {
		return err
	}
	if err := errors.Join(d.checkGfn(from), d.checkGfn(to)); err != nil {
		return err
	}
	target := C.xen_pfn_t(to)
	if to == from {
		target = invalidGFN
	}
	if rc, err := C.xc_altp2m_change_gfn(d.xch, d.domid, C.uint16_t(v), C.xen_pfn_t(from), target); rc < 0 {
		return fmt.Errorf("xen: view %d: change %v to %v: %w", v, from, to, err)
	}
	return nil
}

// SetAccess sets the access rights of gfn in view v. Changes in the
// default view (the host p2m) are undone by Close.
func (d *Driver) SetAccess(v introspect.View, gfn introspect.Gfn, a introspect.Access) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	acc, err := XenmemAccess(a)
	if err != nil {
		return err
	}
	if err := d.checkGfn(gfn); err != nil {
		return err
	}
	if v == introspect.DefaultView {
		if _, seen := d.origAccess[gfn]; !seen {
			var orig C.xenmem_access_t
			if rc, err := C.xc_get_mem_access(d.xch, d.domid, C.uint64_t(gfn), &orig); rc < 0 {
				return fmt.Errorf("xen: access of %v: %w", gfn, err)
			}
			d.origAccess[gfn] = orig
		}
		if rc, err := C.xc_set_mem_access(d.xch, d.domid, C.xenmem_access_t(acc), C.uint64_t(gfn), 1); rc < 0 {
			return fmt.Errorf("xen: set access of %v to %v: %w", gfn, a, err)
		}
		return nil
	}
	if err := d.ownView(v); err != nil {
		return err
	}
	if rc, err := C.xc_altp2m_set_mem_access(d.xch, d.domid, C.uint16_t(v), C.xen_pfn_t(gfn), C.xenmem_access_t(acc)); rc < 0 {
		return fmt.Errorf("xen: view %d: set access of %v to %v: %w", v, gfn, a, err)
	}
	return nil
}

// GetAccess returns the access rights of gfn in view v.
func (d *Driver) GetAccess(v introspect.View, gfn introspect.Gfn) (introspect.Access, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return 0, err
	}
	var acc C.xenmem_access_t
	if v == introspect.DefaultView {
		if rc, err := C.xc_get_mem_access(d.xch, d.domid, C.uint64_t(gfn), &acc); rc < 0 {
			return 0, fmt.Errorf("xen: access of %v: %w", gfn, err)
		}
	} else {
		if err := d.ownView(v); err != nil {
			return 0, err
		}
		if rc, err := C.xc_altp2m_get_mem_access(d.xch, d.domid, C.uint16_t(v), C.xen_pfn_t(gfn), &acc); rc < 0 {
			return 0, fmt.Errorf("xen: view %d: access of %v: %w", v, gfn, err)
		}
	}
	return AccessFromXenmem(uint32(acc))
}

// AllocateFrame populates a new frame just above the guest's highest one,
// so the guest's own memory map never contains it.
func (d *Driver) AllocateFrame() (introspect.Gfn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return 0, err
	}
	if err := d.refreshMaxGfn(); err != nil {
		return 0, err
	}
	gfn := d.maxGfn + 1
	if gfn > maxGuestGfn {
		return 0, fmt.Errorf("xen: no frame number left above %v", d.maxGfn)
	}
	pfn := C.xen_pfn_t(gfn)
	if rc, err := C.xc_domain_populate_physmap_exact(d.xch, d.domid, 1, 0, 0, &pfn); rc < 0 {
		return 0, fmt.Errorf("xen: populate %v: %w", gfn, err)
	}
	d.allocated[gfn] = true
	d.maxGfn = gfn
	return gfn, nil
}

// FreeFrame returns a frame from AllocateFrame to Xen.
func (d *Driver) FreeFrame(gfn introspect.Gfn) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(); err != nil {
		return err
	}
	return d.freeFrame(gfn)
}

func (d *Driver) freeFrame(gfn introspect.Gfn) error {
	if !d.allocated[gfn] {
		return fmt.Errorf("xen: %v was not allocated by this driver", gfn)
	}
	err := d.frames.remove(gfn)
	pfn := C.xen_pfn_t(gfn)
	if rc, rerr := C.xc_domain_decrease_reservation_exact(d.xch, d.domid, 1, 0, &pfn); rc < 0 {
		return errors.Join(err, fmt.Errorf("xen: free %v: %w", gfn, rerr))
	}
	delete(d.allocated, gfn)
	return err
}
