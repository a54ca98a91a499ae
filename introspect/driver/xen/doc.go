// Package xen is the Xen backend of the introspection library: it attaches to
// a running HVM domain through the Xen toolstack libraries (libxenctrl,
// libxenforeignmemory, libxenevtchn, libxendevicemodel, libxenstore) and
// offers physical memory, vCPU registers, pause/resume, altp2m views with
// access rights, shadow frames, event injection and the vm_event monitor
// ring as the capabilities of package driver.
//
// The cgo driver is built only with the build tag "xen" (it needs
// libxen-dev). The parts that do not touch Xen are plain Go and always
// built and tested: the vm_event ring and its request/response layout for
// VM_EVENT_INTERFACE_VERSION 7 (Xen 4.17), the hvm_hw_cpu register record,
// the HVM save-record walk, the access-right mapping, the frame-mapping
// cache and the domain-name lookup. Everything in those files treats the
// shared ring page as untrusted: bad indexes, versions and vCPU ids are
// errors, never panics.
//
// See README.md for what was verified on a machine without Xen and what
// was not.
package xen
