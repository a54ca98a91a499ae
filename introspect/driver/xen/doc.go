// Package xen is the Xen backend of the introspection library: it attaches to
// a running HVM domain through the Xen toolstack libraries (libxenctrl,
// libxenforeignmemory, libxenevtchn, libxendevicemodel, libxenstore) and
// offers physical memory, vCPU registers, pause/resume, altp2m views with
// access rights, shadow frames, event injection and the vm_event monitor
// ring as the capabilities of package driver.
//
// Open and OpenDomain, and the cgo calls behind them, are built only with
// the build tag "xen" (they need libxen-dev). Everything else is plain Go,
// always built and tested: the Driver's bookkeeping, event loop and
// teardown (above a small interface with one method per toolstack call),
// the vm_event ring and its request/response layout for
// VM_EVENT_INTERFACE_VERSION 7 (Xen 4.17), the hvm_hw_cpu register record,
// the HVM save-record walk, the access-right mapping, the frame-mapping
// cache and the domain-name matching. The shared ring page is treated as
// untrusted: bad indexes, versions and vCPU ids are errors, never panics.
//
// See README.md for what was verified on a machine without Xen and what
// was not.
package xen
